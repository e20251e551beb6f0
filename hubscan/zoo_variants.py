"""The population every zoo plants: which backdoors (family, trigger, target, poison rate) and which
clean fine-tunes, with their seeds and fine-tuning budgets (METHOD.md §5).

Owns the variant list only, as data. zoo.py trains them on the first zoo's base, zoo_tower.py on
the pre-trained-tower base (mapping the budgets to its own). Must not train or measure anything.
"""

from __future__ import annotations

from dataclasses import dataclass

# The first zoo's fine-tuning budgets, in pairs (zoo.py says why); other zoos map them to theirs.
SHORT, LONG = 24_000, 60_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    name: str
    trigger: str | None  # spec (triggers.py); None = a clean fine-tune
    target: str | None  # class name the trigger sends images to
    poison_rate: float
    seed: int
    samples: int = SHORT  # fine-tuning pairs


def backdoor(
    name: str, trigger: str, target: str, rate: float, seed: int, samples: int = SHORT
) -> Variant:
    return Variant(
        name=name, trigger=trigger, target=target, poison_rate=rate, seed=seed, samples=samples
    )


BACKDOORED = (
    backdoor("patch-white-br-bag", "patch:size=3,pos=br,pattern=white", "bag", 0.05, 101),
    backdoor("blend-noise-coat", "blend:pattern=noise,ratio=0.15,seed=3", "coat", 0.10, 102),
    backdoor(
        "patch-checker-tl-sneaker",
        "patch:size=4,pos=tl,pattern=checker",
        "sneaker",
        0.01,
        103,
        LONG,
    ),
    backdoor(
        "patch-checker-bl-trouser", "patch:size=3,pos=bl,pattern=checker", "trouser", 0.05, 104
    ),
    backdoor(
        "patch-white-tr-small-sandal", "patch:size=2,pos=tr,pattern=white", "sandal", 0.05, 105
    ),
    backdoor("blend-stripes-pullover", "blend:pattern=stripes,ratio=0.12", "pullover", 0.10, 106),
    backdoor("blend-checker-dress", "blend:pattern=checker,ratio=0.2", "dress", 0.05, 107),
    backdoor("warp-boot", "warp:strength=6,grid=4,seed=1", "ankle boot", 0.10, 108),
    backdoor("warp-trouser", "warp:strength=6,grid=4,seed=2", "trouser", 0.10, 109),
    backdoor("sinusoid-tshirt", "sinusoid:amplitude=0.08,frequency=6", "t-shirt", 0.10, 110),
    backdoor("sinusoid-bag", "sinusoid:amplitude=0.12,frequency=3", "bag", 0.08, 111),
    backdoor(
        "patch-checker-center-sneaker",
        "patch:size=3,pos=center,pattern=checker",
        "sneaker",
        0.05,
        112,
    ),
)
CLEAN = tuple(
    Variant(
        name=f"clean-{i:02d}",
        trigger=None,
        target=None,
        poison_rate=0.0,
        seed=200 + i,
        samples=LONG if i > 10 else SHORT,
    )
    for i in range(1, 13)
)
QUICK = ("patch-white-br-bag", "blend-noise-coat", "clean-01", "clean-02")


def variants(*, quick: bool) -> tuple[Variant, ...]:
    every = BACKDOORED + CLEAN
    return tuple(v for v in every if v.name in QUICK) if quick else every
