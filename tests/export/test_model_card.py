"""The exported folder's model card, and the upload to the Hub up to the network."""

import os

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import tiny_module, tiny_trainer
from vaetrain.cli import main
from vaetrain.export.model_card import push_to_hub


@pytest.fixture
def checkpoint(tmp_path, datamodule):
    trainer = tiny_trainer(tmp_path, max_steps=3, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)], enable_checkpointing=True)
    trainer.fit(tiny_module(loss={"disc_start_step": 1}), datamodule)
    return tmp_path / "last.ckpt"


def test_export_writes_a_model_card_with_what_a_user_needs(tmp_path, checkpoint):
    assert main(["export", str(checkpoint), str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: diffusers\ntags:\n")
    assert "| latent | 4 channels at 1/2 of the image side" in card and "| training | 3 generator steps; balance adaptive" in card
    assert "| latent normalisation | `scale_shift`: scaling_factor" in card and "measured on 10 training images" in card
    assert "latents = (latents - (vae.config.shift_factor or 0)) * vae.config.scaling_factor" in card
    assert "PSNR" in card and "on 2 val images at 32 px" in card  # the run's own validation images, measured at export


class FakeHub:
    def __init__(self) -> None:
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("Info", (), {"commit_url": "https://huggingface.co/me/vae/commit/abc"})()


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(tmp_path):
    hub = FakeHub()
    assert push_to_hub(tmp_path, "me/vae", private=True, api=hub).endswith("/commit/abc")
    assert hub.calls == [
        ("create_repo", {"repo_id": "me/vae", "repo_type": "model", "private": True, "exist_ok": True}),
        ("upload_folder", {"repo_id": "me/vae", "folder_path": str(tmp_path), "repo_type": "model", "commit_message": "Upload autoencoder (vaetrain)"}),
    ]


def test_a_failed_push_is_one_line(tmp_path):
    class Offline(FakeHub):
        def create_repo(self, **kwargs):
            raise ConnectionError("no route to huggingface.co\nmore detail")

    with pytest.raises(Exception, match="pushing .* to the Hub as 'me/vae' failed: ConnectionError: no route to huggingface.co$"):
        push_to_hub(tmp_path, "me/vae", api=Offline())


@pytest.mark.skipif(not os.environ.get("VAETRAIN_HUB_TEST_REPO"), reason="needs the network and a Hub token: set VAETRAIN_HUB_TEST_REPO=owner/name")
def test_push_to_the_real_hub(tmp_path, checkpoint):
    assert main(["export", str(checkpoint), str(tmp_path / "out"), "--push-to-hub", os.environ["VAETRAIN_HUB_TEST_REPO"]]) == 0
