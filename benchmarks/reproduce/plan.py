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
    far_variants: tuple[str, ...]  # experiment 1 on the far-domain dataset (headline variants get every seed)
    far_resolution: int  # its transfer and BN runs
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
    large_resolution: int  # its transfer runs
    large_seeds: tuple[int, ...]
    multitask_independent_seeds: tuple[int, ...] = ()  # multi-task: also train each task alone, at these seeds
    multires_independent_seeds: tuple[int, ...] = ()  # the same for multi-resolution
    batch_size: int = 32
    bn_momentum: float = 0.9  # for bn_stats='momentum'
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        return asdict(self)

    def transfer_resolution(self, dataset: str, far: str | None, large: str | None = None) -> int:
        return self.far_resolution if dataset == far else self.large_resolution if dataset == large else self.resolution


PATCH_LRS = (1e-3, 3e-3, 1e-2)


def full_plan() -> Plan:
    return Plan(
        mode="full",
        resolution=128,
        epochs=5,
        seeds=(0, 1, 2),
        lr_grid={"last": PATCH_LRS, "sb+last": (1e-4, 1e-3, 3e-3), "sb": (1e-2,),
                 "dw+last": (1e-3, 3e-3), "sb+dw+last": (1e-3,), "full": (1e-4, 3e-4, 1e-3)},
        headline_variants=("last", "sb+last", "full"),
        far_variants=("last", "sb+last", "dw+last", "sb+dw+last", "full"),
        far_resolution=96,
        far_lr_grid={"last": PATCH_LRS, "sb+last": (1e-3, 3e-3), "full": (1e-4, 3e-4)},
        random_resolution=64, random_epochs=2, random_seeds=(0, 1, 2), random_lr=1e-2,
        bn_modes=("reestimate", "momentum"), far_bn_modes=("reestimate", "momentum"), bn_modes_seeds=(0,),
        multitask_resolution=96, multitask_epochs=2, multitask_seeds=(0, 1, 2),
        multires_resolutions=(96, 128, 160), multires_epochs=2, multires_seeds=(0, 1, 2),
        large_epochs=2, large_resolution=96, large_seeds=(0, 1, 2),
        multitask_independent_seeds=(0,), multires_independent_seeds=(0,),
        notes=(("sized for 2 cores (76 runs, 54 minutes of training on 2 idle cores, measured over three "
                "invocations: 69 runs fresh in 45 minutes wall, the 7 runs added later, then 8 multi-task runs again; "
                "host speed moved single runs by up to 1.9x, and a run of 69 on a slower host before a train-graph "
                "leak was fixed took 95): headline comparisons (last, S/B + last "
                "and full on both domains, multi-task, multi-resolution, the random backbone) and the more-data rows "
                "get 3 seeds, the other variants, the BN-mode ablation and both independent baselines 1; the far "
                "domain (EuroSAT's 64 px tiles) and the more-data set train at 96 px; LR sweeps are wide only where "
                "the paper's LR claim and the API defaults need them"),),
    )


def quick_plan() -> Plan:
    return Plan(
        mode="quick",
        resolution=64,
        epochs=2,
        seeds=(0,),
        lr_grid={"last": (1e-2,), "sb+last": (1e-3, 3e-3), "sb": (1e-2,), "dw+last": (1e-3,),
                 "sb+dw+last": (1e-3,), "full": (1e-4, 1e-3)},
        headline_variants=("last", "sb+last", "full"),
        far_variants=("last", "sb+last"),
        far_resolution=64,
        far_lr_grid={},
        random_resolution=48, random_epochs=2, random_seeds=(), random_lr=1e-2,
        bn_modes=("reestimate",), far_bn_modes=(), bn_modes_seeds=(0,),
        multitask_resolution=48, multitask_epochs=1, multitask_seeds=(),
        multires_resolutions=(48, 64), multires_epochs=1, multires_seeds=(0,),
        large_epochs=1, large_resolution=64, large_seeds=(0,),
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
        far_resolution=32,
        far_lr_grid={},
        random_resolution=32, random_epochs=1, random_seeds=(0,), random_lr=1e-2,
        bn_modes=(), far_bn_modes=(), bn_modes_seeds=(),
        multitask_resolution=32, multitask_epochs=1, multitask_seeds=(),
        multires_resolutions=(32, 40), multires_epochs=1, multires_seeds=(),
        large_epochs=1, large_resolution=32, large_seeds=(),
        batch_size=8,
        notes=("smoke plan: checks the pipeline, not the claims",),
    )


def gpu_plan() -> Plan:
    """The paper's scale for a GPU machine: 224 px, many epochs, the large datasets (``--mode gpu``).

    Same schedule and training API as the CPU modes; only the scale knobs differ.
    """
    return Plan(
        mode="gpu",
        resolution=224,
        epochs=30,
        seeds=(0, 1, 2),
        lr_grid={"last": PATCH_LRS, "sb+last": (1e-4, 1e-3, 3e-3, 1e-2), "sb": (3e-3, 1e-2),
                 "dw+last": (1e-3, 3e-3), "sb+dw+last": (1e-3, 3e-3), "full": (3e-5, 1e-4, 3e-4, 1e-3)},
        headline_variants=("last", "sb+last", "full"),
        far_variants=("last", "sb+last", "dw+last", "sb+dw+last", "full"),
        far_resolution=224,
        far_lr_grid={"last": PATCH_LRS, "sb+last": (1e-3, 3e-3, 1e-2), "full": (3e-5, 1e-4, 3e-4)},
        random_resolution=224, random_epochs=30, random_seeds=(0, 1, 2), random_lr=1e-2,
        bn_modes=("reestimate", "momentum"), far_bn_modes=("reestimate", "momentum"), bn_modes_seeds=(0, 1, 2),
        multitask_resolution=224, multitask_epochs=30, multitask_seeds=(0, 1, 2),
        multires_resolutions=(96, 128, 160, 192, 224), multires_epochs=30, multires_seeds=(0, 1, 2),
        large_epochs=30, large_resolution=224, large_seeds=(0, 1, 2),
        multitask_independent_seeds=(0, 1, 2), multires_independent_seeds=(0, 1, 2),
        batch_size=64,
        notes=(("gpu mode: the paper's resolutions (224 px; multi-resolution 96-224 px), 30 epochs, 3 seeds for "
                "every comparison and every baseline, on flowers5_large (near) and eurosat_large (far)"),),
    )


PLANS = {"full": full_plan, "quick": quick_plan, "gpu": gpu_plan, "smoke": smoke_plan}
# The (near, far, more data) datasets a mode reads unless --data/--far-data/--data-large say otherwise;
# gpu mode's near and far datasets are already the large ones.
DEFAULT_DATASETS = {mode: ("../shared/data/flowers5", "../shared/data/eurosat", None) for mode in PLANS}
DEFAULT_DATASETS["full"] = ("../shared/data/flowers5", "../shared/data/eurosat", "../shared/data/eurosat_large")
DEFAULT_DATASETS["gpu"] = ("../shared/data/flowers5_large", "../shared/data/eurosat_large", None)
