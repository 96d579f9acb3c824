"""What each mode runs: one frozen dataclass per mode, no option dicts.

Scale knobs are the only difference between modes; the schedule
(``experiments``) is the same. Learning rates are Adam's (the training
API's optimizer); the paper's RMSProp 0.045 schedule is not available there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Variant name -> (patch kinds trained, BN statistics re-estimated before training).
# "full" trains every layer. The head of "sb" stays at its random initialisation.
VARIANTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "last": (("logits",), False),
    "last+stats": (("logits",), True),
    "sb+last": (("scale_bias", "logits"), False),
    "sb": (("scale_bias",), False),
    "dw+last": (("depthwise", "logits"), False),
    "sb+dw+last": (("scale_bias", "depthwise", "logits"), False),
    "full": (("full",), False),
}
TRANSFER_VARIANTS = ("last", "sb+last", "sb", "dw+last", "sb+dw+last", "full")
LABELS = {
    "last": "last layer",
    "last+stats": "last layer + re-estimated BN statistics",
    "sb+last": "S/B + last",
    "sb": "S/B only (random fixed last)",
    "dw+last": "DW + last",
    "sb+dw+last": "S/B + DW + last",
    "full": "full fine-tune",
}


@dataclass(frozen=True)
class Plan:
    """Scale of one mode. Every run states its own seed, resolution, epochs and LR."""

    mode: str
    resolution: int  # single-task transfer experiments (1, 2, 4)
    epochs: int
    seeds: tuple[int, ...]  # headline seeds; learning rates are chosen on seeds[0]
    lr_grid: dict[str, tuple[float, ...]]  # experiment 1 sweep, per variant
    headline_variants: tuple[str, ...]  # get every seed at their chosen LR; the others seeds[0] only
    far_variants: tuple[str, ...]  # experiment 1 on the far-domain dataset
    far_lr_grid: dict[str, tuple[float, ...]]  # its sweep; variants not listed reuse the near choice
    random_resolution: int
    random_epochs: int
    random_seeds: tuple[int, ...]
    random_lr: float
    bn_modes: tuple[str, ...]  # S/B + last under these bn_stats modes besides 'frozen' (experiment 4)
    far_bn_modes: tuple[str, ...]  # the same on the far dataset
    bn_modes_seeds: tuple[int, ...]
    multitask_resolution: int
    multitask_epochs: int
    multitask_seeds: tuple[int, ...]
    multires_resolutions: tuple[int, ...]
    multires_epochs: int
    multires_seeds: tuple[int, ...]
    large_epochs: int  # --data-large only
    large_seeds: tuple[int, ...]
    independent_baselines: bool = True  # multi-task/-resolution: also train each task alone
    batch_size: int = 32
    bn_momentum: float = 0.9  # for bn_stats='momentum'
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        return asdict(self)


PATCH_LRS = (1e-3, 1e-2)


def full_plan() -> Plan:
    return Plan(
        mode="full",
        resolution=128,
        epochs=5,
        seeds=(0, 1, 2),
        lr_grid={"last": PATCH_LRS, "sb+last": (1e-4, 1e-3, 3e-3), "sb": (1e-2,),
                 "dw+last": (3e-3,), "sb+dw+last": (1e-3,), "full": (1e-4, 3e-4, 1e-3)},
        headline_variants=("last", "sb+last", "full"),
        far_variants=("last", "sb+last"),
        far_lr_grid={"last": PATCH_LRS, "sb+last": (1e-3, 3e-3)},
        random_resolution=64, random_epochs=2, random_seeds=(0, 1), random_lr=1e-2,
        bn_modes=("reestimate", "momentum"), far_bn_modes=("reestimate",), bn_modes_seeds=(0,),
        multitask_resolution=64, multitask_epochs=2, multitask_seeds=(0, 1, 2),
        multires_resolutions=(48, 64, 80), multires_epochs=2, multires_seeds=(0, 1, 2),
        large_epochs=2, large_seeds=(0, 1, 2),
        notes=(("sized for 60 minutes on 2 idle cores (about 10 more with --data-large): headline "
                "comparisons (last, S/B + last and full on both domains, multi-task, multi-resolution) get 3 "
                "seeds, the random backbone 2, the other variants and the BN-mode ablation 1; LR sweeps are "
                "wide only where the paper's LR claim needs them (S/B + last, full)"),),
    )


def quick_plan() -> Plan:
    return Plan(
        mode="quick",
        resolution=64,
        epochs=2,
        seeds=(0,),
        lr_grid={"last": (1e-2,), "sb+last": (1e-4, 1e-3), "sb": (1e-2,), "dw+last": (1e-3,),
                 "sb+dw+last": (1e-3,), "full": (1e-4, 1e-3)},
        headline_variants=("last", "sb+last", "full"),
        far_variants=("last", "sb+last"),
        far_lr_grid={},
        random_resolution=48, random_epochs=2, random_seeds=(), random_lr=1e-2,
        bn_modes=("reestimate",), far_bn_modes=(), bn_modes_seeds=(0,),
        multitask_resolution=48, multitask_epochs=1, multitask_seeds=(),
        multires_resolutions=(48, 64), multires_epochs=1, multires_seeds=(0,),
        large_epochs=1, large_seeds=(0,),
        independent_baselines=False,
        batch_size=25,  # divides flowers5's 500 training photos: no partial last batch to trace again
        notes=(("quick mode previews transfer, learning rate, BN statistics and multi-resolution (48-64 px, "
                "1 epoch, no independent baseline) at 64 px with one seed, in under 10 minutes; the random "
                "backbone and multi-task experiments, and every verdict, are the full mode's"),),
    )


def smoke_plan() -> Plan:
    """The test suite's plan: with ``--only transfer``, one S/B + last row on a handful of images at 32 px."""
    return Plan(
        mode="smoke",
        resolution=32,
        epochs=1,
        seeds=(0,),
        lr_grid={"sb+last": (1e-3,)},
        headline_variants=("sb+last",),
        far_variants=(),
        far_lr_grid={},
        random_resolution=32, random_epochs=1, random_seeds=(0,), random_lr=1e-2,
        bn_modes=(), far_bn_modes=(), bn_modes_seeds=(),
        multitask_resolution=32, multitask_epochs=1, multitask_seeds=(),
        multires_resolutions=(32, 40), multires_epochs=1, multires_seeds=(),
        large_epochs=1, large_seeds=(),
        batch_size=8,
        notes=("smoke plan: checks the pipeline, not the claims",),
    )


PLANS = {"full": full_plan, "quick": quick_plan, "smoke": smoke_plan}
