"""Progress a person can read while a long command works: a bar with a time estimate on stderr (tqdm, already
a dependency through diffusers and Lightning). On a terminal it redraws every second; written to a log or a
pipe it still reports, every 30 s, so a run that is not watched live is not silent either.

A `Progress` is any callable (total, label, unit) -> an object with `update(n)` and `close()`: tests pass a
recorder, the commands take the default, `bar`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from torch import nn


class Bar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


Progress = Callable[[int | None, str, str], Bar]


def bar(total: int | None, label: str, unit: str) -> Bar:
    """tqdm on stderr: `total` None counts without an estimate."""
    from tqdm import tqdm

    terminal = sys.stderr.isatty()
    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, dynamic_ncols=terminal, mininterval=1.0 if terminal else 30.0, leave=False)


@contextmanager
def counting_calls(modules: list[nn.Module], progress: Bar) -> Iterator[None]:
    """`progress.update(1)` after every forward call of each module (an encoder, a decoder) while inside. The
    hook returns None whatever `update` returns (tqdm's returns True when it redraws, and a forward hook's
    return value would replace the module's output)."""

    def count(*_) -> None:
        progress.update(1)

    handles = [module.register_forward_hook(count) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
