"""Every figure a reading quotes from a RESULTS.md table (the issue-26 reading's all of them), in the phrase
that quotes it, computed from the table; a claim in words (who leads, who ties, what loses everywhere) is
checked on the table too and raises `Contradicted` when the table no longer says it.

    .venv/bin/python benchmarks/quotes.py   # every phrase as the tables make it today
"""

from __future__ import annotations

from collections.abc import Callable

from readings import CHANGELOG, PRESETS, PSNR_SETS, README, VIDEO_DOC, Quote, Table, best, cell, each, fewer_steps, gaps, mean_psnr, require, span


def _tiny_leads(rows: Table) -> tuple[str, ...]:
    """The run count, tiny's mean PSNR, the runner-up and its mean."""
    ranked = sorted(rows, key=lambda row: mean_psnr(rows, row), reverse=True)
    require(ranked[0] == "tiny", "tiny.yaml has the highest mean PSNR")
    return str(len(rows)), f"{mean_psnr(rows, 'tiny'):.2f}", ranked[1], f"{mean_psnr(rows, ranked[1]):.2f}"


def _tiny_columns(rows: Table) -> tuple[str, ...]:
    """tiny's PSNR where it is alone in front, the column it ties and with whom, its ΔE00 (the lowest)."""
    alone = [s for s in PSNR_SETS if best(rows, s) == ["tiny"]]
    require(alone == list(PSNR_SETS[1:]), "tiny.yaml alone has the highest PSNR on the clothing columns")
    require(best(rows, PSNR_SETS[0]) == ["tiny@gan_start=0", "tiny"], "tiny.yaml ties tiny@gan_start=0 on Tiny-ImageNet")
    require(best(rows, "ΔE00", lowest=True) == ["tiny"], "tiny.yaml has the lowest ΔE00")
    return each([cell(rows, "tiny", s) for s in alone]), f"{cell(rows, 'tiny', PSNR_SETS[0]):.2f}", f"{cell(rows, 'tiny', 'ΔE00'):.2f}"


def _ssim_leader(rows: Table) -> tuple[str, ...]:
    require(all(best(rows, s, 1) == ["ms_ssim_l1"] for s in PSNR_SETS), "ms_ssim_l1 has the best SSIM in every column")
    return (span(gaps(rows, "ms_ssim_l1", "tiny", index=1), joiner=" to +"),)


def _loses_everywhere(rows: Table, worse: str, better: str) -> None:
    """`worse` has lower PSNR and SSIM than `better` in every column."""
    require(all(g > 0 for i in (0, 1) for g in gaps(rows, better, worse, index=i)), f"{worse} loses to {better} in every column")


def _lr_sweep(rows: Table) -> tuple[str, ...]:
    require(all(g > 0 for g in gaps(rows, "tiny@lr=4e-4", "tiny", index=1)), "lr 4e-4 has the better SSIM")
    return span(gaps(rows, "tiny", "tiny@lr=1e-4")), span(gaps(rows, "tiny", "tiny@lr=4e-4"))


def _focal(rows: Table) -> tuple[str, ...]:
    _loses_everywhere(rows, "focal_frequency", "tiny")
    return (span(fewer_steps(rows, [("focal_frequency", "tiny")]), 0),)


def _ms_ssim_cost(rows: Table) -> tuple[str, ...]:
    """Its PSNR behind tiny.yaml (it has the best SSIM), its bias on the native-size photos."""
    _ssim_leader(rows)
    return span(gaps(rows, "tiny", "ms_ssim_l1")), ", ".join(f"{cell(rows, 'ms_ssim_l1', 'ΔE00', i):.1f}" for i in (1, 2, 3))


def _lpips_cost(rows: Table) -> tuple[str, ...]:
    pairs = [("ldm", "tiny"), ("focal_frequency_lpips", "focal_frequency"), ("ms_ssim_l1_lpips", "ms_ssim_l1")]
    for with_lpips, without in pairs:
        _loses_everywhere(rows, with_lpips, without)
    return (span(fewer_steps(rows, pairs), 0),)


def _against_the_example(rows: Table) -> tuple[str, ...]:
    ahead, colour = gaps(rows, "tiny", "diffusers_example"), [f"{cell(rows, row, 'ΔE00'):.2f}" for row in ("tiny", "diffusers_example")]
    return f"{ahead[0]:.2f}", each(ahead[1:3], sign="+"), f"{ahead[3]:.2f}", *colour


def _ldm_variants(rows: Table) -> tuple[str, ...]:
    values = [cell(rows, name, PSNR_SETS[0]) for name in ("ldm", "ldm_lecam", "ldm_no_lpips")]
    return (f"{max(values) - min(values):.2f}",)


def _lecam(rows: Table) -> tuple[str, ...]:
    require(all(best(rows, s, 1) == ["ldm_lecam"] for s in PSNR_SETS[:3]), "LeCam has the best SSIM everywhere")
    require(best(rows, "clothing_128") == ["ldm_lecam"], "LeCam has the best 128 px PSNR")
    return (f"{cell(rows, 'ldm_lecam', 'clothing_128') - cell(rows, 'ldm', 'clothing_128'):.2f}",)


def _gradnorm_behind(rows: Table) -> tuple[str, ...]:
    recipes, sets = ("gradnorm", "gradnorm_lowpass", "vqgan_training"), PSNR_SETS[:3]
    return (span([max(cell(rows, n, s) for n in rows) - cell(rows, g, s) for g in recipes for s in sets]),)


def _discrete_leads_reconstruction(rows: Table) -> tuple[str, ...]:
    columns = [(s, index, False) for s in PSNR_SETS[:3] for index in (0, 1)] + [("LPIPS", 0, True)]
    for column, index, lowest in columns:
        require(best(rows, column, index, lowest) == ["ldm_no_lpips"], f"the KL autoencoder leads {column}")
    require(best(rows, "probe loss", lowest=True) != ["ldm_no_lpips"], "the KL autoencoder's latents are not the probe's easiest")
    return ()


def _discrete_lead(rows: Table) -> tuple[str, ...]:
    return tuple(f"{cell(rows, 'ldm_no_lpips', s) - max(cell(rows, n, s) for n in ('vq', 'vq_alive', 'fsq')):.1f}" for s in PSNR_SETS[:2])


def _per_frame_lead(rows: Table) -> tuple[str, ...]:
    ahead = [cell(rows, "kl_tiny_per_frame", c) - cell(rows, "wan_tiny", c) for c in ("PSNR", "SSIM")]
    return f"{ahead[0]:.1f}", f"{ahead[1]:.2f}", f"{cell(rows, 'kl_tiny_per_frame', 'flicker'):.1f}", f"{cell(rows, 'wan_tiny', 'flicker'):.1f}"


def _checkpointing_saves(rows: Table) -> tuple[str, ...]:
    """The growth's and the peak's saving in percent, each with the two values (rounded to MiB)."""
    figures = []
    for column in ("growth", "peak"):
        off, on = cell(rows, "off", column), cell(rows, "on", column)
        figures += [f"{100 - 100 * on / off:.0f}", f"{off:.0f}", f"{on:.0f}"]
    return tuple(figures)


def _frames_ranking(rows: Table) -> tuple[str, ...]:
    """17 frames has the best held-out PSNR of the Wan runs; its and the others' PSNR."""
    wan = ("wan_tiny_17", "wan_tiny_5", "wan_tiny_9")
    require(max(wan, key=lambda row: cell(rows, row, "PSNR ↑")) == "wan_tiny_17", "17-frame clips give the best Wan PSNR")
    return tuple(f"{cell(rows, row, 'PSNR ↑'):.2f}" for row in wan)


def _chosen_holds(rows: Table) -> tuple[str, ...]:
    require(cell(rows, "wan_tiny_17", "largest gap") < 1, "the 17-frame run's chunks stay within 1 dB of chunk 2")
    return f"{cell(rows, 'wan_tiny_17', 'largest gap'):.2f}", f"{cell(rows, 'wan_tiny_17', 'drift'):+.2f}"


def _short_clips_collapse(rows: Table) -> tuple[str, ...]:
    """The chunks 5 and 9 frames trained on, then the first chunk past them, and their drifts."""
    five, nine = (lambda i: cell(rows, "wan_tiny_5", "PSNR by", i)), (lambda i: cell(rows, "wan_tiny_9", "PSNR by", i))
    require(five(2) < five(1) - 1 and nine(3) < nine(2) - 1, "5 and 9 frames fall after the chunks they trained on")
    figures = [five(0), five(1), five(2), nine(0), nine(1), nine(2), nine(3)]
    return (*(f"{v:.2f}" for v in figures), f"{cell(rows, 'wan_tiny_5', 'drift'):+.2f}", f"{cell(rows, 'wan_tiny_9', 'drift'):+.2f}")


def _mixed_best(rows: Table) -> tuple[str, ...]:
    """The mixed-length draw: the best Wan PSNR, its chunks within 1 dB of chunk 2."""
    wan = ("wan_tiny_mixed", "wan_tiny_17", "wan_tiny_5", "wan_tiny_9")
    require(max(wan, key=lambda row: cell(rows, row, "PSNR ↑")) == "wan_tiny_mixed", "the mixed draw gives the best Wan PSNR")
    require(cell(rows, "wan_tiny_mixed", "largest gap") < 1, "the mixed run's chunks stay within 1 dB of chunk 2")
    psnr, gap, drift = (cell(rows, "wan_tiny_mixed", column) for column in ("PSNR ↑", "largest gap", "drift"))
    return f"{psnr:.2f}", f"{gap:.2f}", f"{drift:+.2f}"


def _mixed_against_image_vae(rows: Table) -> tuple[str, ...]:
    ahead = cell(rows, "wan_tiny_mixed", "PSNR ↑") - cell(rows, "kl_tiny_per_frame", "PSNR ↑")
    require(ahead > 0, "the mixed Wan run has the better PSNR than the image VAE")
    return f"{ahead:.2f}", f"{cell(rows, 'wan_tiny_mixed', 'flicker'):.2f}", f"{cell(rows, 'kl_tiny_per_frame', 'flicker'):.2f}"


def _seed1_mixed_holds(rows: Table) -> tuple[str, ...]:
    require(cell(rows, "wan_tiny_mixed", "largest gap") < 1 < cell(rows, "wan_tiny_17", "largest gap"), "with seed 1 only the mixed draw holds")
    gap, drift, psnr = (cell(rows, "wan_tiny_mixed", column) for column in ("largest gap", "drift", "PSNR ↑"))
    return f"{gap:.2f}", f"{drift:+.2f}", f"{psnr:.2f}"


def _image_vae_still_ahead(rows: Table) -> tuple[str, ...]:
    ahead = cell(rows, "kl_tiny_per_frame", "PSNR ↑") - cell(rows, "wan_tiny_17", "PSNR ↑")
    require(ahead > 0, "the image VAE frame by frame has the better PSNR")
    return f"{ahead:.2f}", f"{cell(rows, 'kl_tiny_per_frame', 'flicker'):.2f}", f"{cell(rows, 'wan_tiny_17', 'flicker'):.2f}"


def _ratio(rows: Table, a: str, b: str, column: str = "steps") -> float:
    return cell(rows, a, column) / cell(rows, b, column)


def _values(*cells: tuple[str, str, int]) -> Callable[[Table], tuple[str, ...]]:
    """Cells as the table prints them: (row, column, digits)."""
    return lambda rows: tuple(f"{cell(rows, row, column):.{digits}f}" for row, column, digits in cells)


def _spans(*pairs: tuple[str, str], sets: tuple[str, ...] = PSNR_SETS, digits: int = 2, joiner: str = "-") -> Callable[[Table], tuple[str, ...]]:
    """For each (better, worse): the span of their PSNR gaps."""
    return lambda rows: tuple(span(gaps(rows, a, b, sets), digits, joiner) for a, b in pairs)


RACE_26 = "recipe-race-26"
RACE_32 = "video-race-32"
RACE_32_SEED1 = "video-race-32-seed1"


def _stream_memory(rows: Table) -> tuple[str, ...]:
    """Per size and precision, the 280-frame run's peak RSS over its 70-frame cut's (and that it does not grow)."""
    pairs = [(name, name.replace("-280-", "-70-")) for name in rows if "-280-" in name and name.replace("-280-", "-70-") in rows]
    ratios = [cell(rows, long, "peak RSS") / cell(rows, short, "peak RSS") for long, short in pairs]
    require(bool(ratios) and max(ratios) < 1.1, "peak memory does not grow with the video's length")
    return str(len(pairs)), span(ratios, 2, "-")


def _stream_speed(rows: Table) -> tuple[str, ...]:
    """Kilopixels per CPU second of every run (frames x pixels / CPU seconds)."""
    speeds = [cell(rows, name, "frames") * _pixels(name) / cell(rows, name, "CPU s") / 1000 for name in rows]
    return span(speeds, 0, "-"), str(len(speeds))


def _pixels(name: str) -> int:
    width, height = name.split("-")[0].split("x")
    return int(width) * int(height)


QUOTES: tuple[Quote, ...] = (
    # issue 26: the reading after its table
    Quote(RACE_26, "the highest mean PSNR of the {} runs ({} dB; next `{}`, {} dB)", _tiny_leads),
    Quote(
        RACE_26,
        "the highest PSNR on the 64 / 128 px clothing crops and the native-size photos ({} dB), a tie with "
        "`tiny@gan_start=0` on the held-out 64 px images ({} dB each) and the lowest ΔE00 on the native-size photos ({})",
        _tiny_columns,
    ),
    Quote(RACE_26, "the best SSIM in every column is `ms_ssim_l1`'s (+{} over tiny.yaml)", _ssim_leader),
    Quote(RACE_26, "lr 2e-4 beats 1e-4 by {} dB and 4e-4 by {} dB (4e-4 has the better SSIM)", _lr_sweep),
    Quote(RACE_26, "EMA 0.99 beats 0.9 by {} dB, while 0.999 loses {} dB", _spans(("tiny", "tiny@ema=0.9"), ("tiny", "tiny@ema=0.999"))),
    Quote(RACE_26, "at {} steps (its 1000-step horizon", _values(("tiny@ema=0.999", "steps", 0))),
    Quote(RACE_26, "GAN start 0 is {} dB behind 200, and 400 is {} dB behind it", _spans(("tiny", "tiny@gan_start=0"), ("tiny", "tiny@gan_start=400"))),
    Quote(RACE_26, "the focal frequency loss costs {} % of the steps and helps neither PSNR nor SSIM here", _focal),
    Quote(RACE_26, "MS-SSIM + L1 (separable filters: {} s/step against L1's {})", _values(("ms_ssim_l1", "s/step", 2), ("tiny", "s/step", 2))),
    Quote(RACE_26, "but {} dB less PSNR and a dark cast (bias {} levels in R, G, B on the native-size photos", _ms_ssim_cost),
    Quote(RACE_26, "LPIPS on a random VGG costs {} % of the steps and lost everywhere", _lpips_cost),
    Quote(
        RACE_26,
        "tiny.yaml is +{} dB on the held-out images, {} dB on the clothing crops and +{} dB on the native-size photos (ΔE00 {} against {})",
        _against_the_example,
    ),
    Quote(RACE_26, "the script is still {} dB behind", lambda r: (each(gaps(r, "tiny", "diffusers_example_tiny_lr")),)),
    # the CHANGELOG's line on issue 26
    Quote(RACE_26, "the highest mean PSNR of its {} runs ({} dB; next `{}`, {} dB)", _tiny_leads, CHANGELOG),
    Quote(RACE_26, "(the highest SSIM in the race, {} dB less PSNR at equal time)", lambda r: _ms_ssim_cost(r)[:1], README),
    # issue 11
    Quote("recipe-race", "The three LDM variants are within {} dB of each other on the held-out Tiny-ImageNet images", _ldm_variants),
    Quote("recipe-race", "`ldm_no_lpips` tops that column with {}x the steps of `ldm`", lambda r: (f"{_ratio(r, 'ldm_no_lpips', 'ldm'):.1f}",)),
    Quote("recipe-race", "LeCam gives the best SSIM everywhere and the best PSNR on the 128 px clothing crops (+{} dB over `ldm`", _lecam),
    Quote("recipe-race", "LPIPS on a random VGG costs ~{} % of a CPU step", lambda r: (f"{100 - 100 * _ratio(r, 'ldm_no_lpips', 'ldm', 's/step'):.0f}",)),
    Quote("recipe-race", "Every gradnorm recipe is {} dB behind the best PSNR of each column", _gradnorm_behind),
    Quote(
        "recipe-race",
        "it was {} dB behind the race's best PSNR",
        lambda r: (span([max(cell(r, n, s) for n in r) - cell(r, "vqgan_training", s) for s in PSNR_SETS[:3]], 1),),
        PRESETS,
    ),
    # issue 13
    Quote("families", "reaches *higher* PSNR than the f8c4 KL model in the same time (+{} dB", _spans(("dc", "kl"), sets=PSNR_SETS[:3], joiner=" to +")),
    Quote("families", "and is {} dB behind at 128 px", lambda r: (f"{cell(r, 'kl', 'clothing_128') - cell(r, 'taesd', 'clothing_128'):.1f}",)),
    Quote("families", "so it took {}x the steps ({} vs {})", lambda r: (f"{_ratio(r, 'dc', 'kl'):.1f}", *_values(("dc", "steps", 0), ("kl", "steps", 0))(r))),
    # issue 12
    Quote("latent-race", "+{} dB PSNR on all three image sets", _spans(("ldm_no_lpips+eq", "ldm_no_lpips"), sets=PSNR_SETS[:3], digits=1, joiner=" to +")),
    Quote("latent-race", "flow-matching loss {} against {}", _values(("ldm_no_lpips+eq", "probe loss", 3), ("ldm_no_lpips", "probe loss", 3))),
    # issue 23
    Quote("discrete-race", "the continuous f8c4 KL autoencoder leads every reconstruction column (PSNR, SSIM and LPIPS*", _discrete_leads_reconstruction),
    Quote("discrete-race", "+{} dB on Tiny-ImageNet, +{} dB on clothing at 64 px over the best discrete model)", _discrete_lead),
    Quote("discrete-race", "both beat plain VQ by {} dB", lambda r: (span(gaps(r, "vq_alive", "vq", PSNR_SETS[:3]) + gaps(r, "fsq", "vq", PSNR_SETS[:3]), 1),)),
    # issue 24
    Quote("video-race", "+{} dB PSNR, +{} SSIM, and *less* flicker ({} vs {} levels)", _per_frame_lead),
    # issue 32
    Quote("wan-checkpointing", "cuts the step's growth by {} % ({} to {} MiB) and the peak by {} % ({} to {} MiB)", _checkpointing_saves),
    Quote("wan-checkpointing", "16 times the pixels: about {} GiB", lambda r: (f"{16 * cell(r, 'off', 'growth') / 1024:.0f}",)),
    Quote("wan-checkpointing", "and a step about {} minutes", lambda r: (f"{16 * cell(r, 'off', 's/step') / 60:.0f}",)),
    Quote("wan-checkpointing", "at a cost of {} % more time per step", lambda r: (f"{100 * _ratio(r, 'on', 'off', 's/step') - 100:.0f}",)),
    # issue 32: real footage, the clip length of the Wan presets
    Quote(RACE_32, "`wan_tiny_17` has the best held-out PSNR of the three Wan runs ({} dB, against {} dB for 5 frames and {} dB for 9)", _frames_ranking),
    Quote(RACE_32, "the only fixed length whose chunks hold: every chunk of its 33-frame clips within {} dB of chunk 2 (drift {} dB)", _chosen_holds),
    Quote(
        RACE_32,
        "5 frames holds its two chunks ({} / {} dB) and falls to {} dB at the third; 9 frames holds three ({} / {} / {} dB) "
        "and falls to {} dB at the fourth (drift {} and {} dB)",
        _short_clips_collapse,
    ),
    Quote(RACE_32, "the image VAE frame by frame is still {} dB ahead, with flicker {} against {} levels", _image_vae_still_ahead),
    Quote(
        RACE_32,
        "the mixed-length draw is the best Wan run: {} dB held-out PSNR against {} dB for 17 frames, {} dB for 5 and {} dB for 9",
        lambda r: (_mixed_best(r)[0], *_frames_ranking(r)),
    ),
    Quote(RACE_32, "with every chunk of its 33-frame clips within {} dB of chunk 2 (drift {} dB)", lambda r: _mixed_best(r)[1:]),
    Quote(
        RACE_32, "ahead of the image VAE applied frame by frame ({} dB more PSNR), though with more flicker ({} against {} levels)", _mixed_against_image_vae
    ),
    Quote(RACE_32, "more steps per CPU second ({} against {} for 17 frames)", _values(("wan_tiny_mixed", "steps", 0), ("wan_tiny_17", "steps", 0))),
    Quote(RACE_32, "draw each batch's length from 5, 9 and 17 frames (the best held-out PSNR of the runs: {} dB", lambda r: _mixed_best(r)[:1], CHANGELOG),
    Quote(RACE_32, "every chunk within {} dB of the second", lambda r: _mixed_best(r)[1:2], VIDEO_DOC),
    Quote(
        RACE_32_SEED1,
        "falls past them (chunk 6: {} dB; drift {} dB,\nlargest gap {} dB)",
        lambda r: (f"{cell(r, 'wan_tiny_17', 'PSNR by', 5):.2f}", f"{cell(r, 'wan_tiny_17', 'drift'):+.2f}", f"{cell(r, 'wan_tiny_17', 'largest gap'):.2f}"),
    ),
    Quote(RACE_32_SEED1, "every chunk within {} dB\nof chunk 2, drift {} dB) at {} dB", _seed1_mixed_holds),
    Quote("stream-recon", "in all {} pairs the 280-frame video's peak RSS is {}x its 70-frame cut's", _stream_memory),
    Quote("stream-recon", "Speed is {} kilopixels per CPU second across the {} runs", _stream_speed),
    Quote(
        "stream-recon",
        "finishes in {} CPU minutes at a peak RSS of {} MB,\n{}x the peak of its 70-frame cut",
        lambda r: (
            f"{cell(r, '1280x720-280-bf16', 'CPU s') / 60:.1f}",
            f"{cell(r, '1280x720-280-bf16', 'peak RSS'):.0f}",
            f"{_ratio(r, '1280x720-280-bf16', '1280x720-70-bf16', 'peak RSS'):.2f}",
        ),
    ),
)


if __name__ == "__main__":
    for quote in QUOTES:
        print(f"[{quote.section} -> {quote.document.name}] {quote.render()}")
