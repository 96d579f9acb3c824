"""Figures quoted for orientation: the paper (arXiv 1810.10703) and the plain-Keras anchor.

The paper's setups differ from ours (ImageNet-scale data, 224/299 px,
RMSProp 0.045 with decay, many epochs on GPUs); its numbers orient, they are
not targets. Top-1 accuracy in percent.
"""

# Table 2: InceptionV3 transfer (Flowers-102 / Cars / Aircraft). Trained parameters in brackets.
TABLE2 = {
    "last": "84.5 / 55 / 45.9 (208K)",
    "sb+last": "90.4 / 81 / 70.7 (244K)",
    "sb": "79.5 / 33 / 52.3 (36K)",
    "full": "93.3 / 92.3 / 87.3 (25M)",
}
# Figure 3 plots MobileNetV2 DW and S/B+DW patches without numbers in the text.
FIGURE3 = {"dw+last": "fig. 3 (no number in text)", "sb+dw+last": "fig. 3 (no number in text)"}

# Table 3 (right): learning ImageNet from random filters, MobileNetV2.
TABLE3_RANDOM = {"last": "0 (1.31M)", "sb+last": "20 (1.35M)", "sb": "2.3 (34K)", "full": "71.8 (3.5M)"}

# Table 6: MobileNetV2, logit fine-tuning vs BN statistics (Flowers / Aircraft / Cars / CIFAR-100).
TABLE6 = {
    "last": "80.2 / 43.3 / 51.4 / 45.0",
    "last+stats": "79.8 / 38.3 / 43.6 / 57.2",
    "sb+last": "86.9 / 65.6 / 75.9 / 74.9",
}

# Table 4: multi-task MobileNetV2, ImageNet / Places365, and total parameters.
TABLE4 = {
    "sb+last private": ("70.2 / 54.3", "3.97M"),
    "last private": ("64.4 / 51.4", "3.93M"),
    "independent": ("71.8 / 54.2", "6.05M"),
}

# Table 5: ImageNet at several resolutions, MobileNetV2 (S/B private, all shared, independent).
TABLE5 = {
    96: (60.3, 52.6, 60.3),
    128: (66.3, 62.4, 65.3),
    160: (69.5, 67.2, 68.8),
    192: (71.0, 69.4, 70.7),
    224: (71.8, 70.6, 71.8),
}
TABLE5_PARAMETERS = ("3.7M", "3.5M", "17.7M")

FIGURE9 = ("full fine-tuning needs a small learning rate; S/B tuning needs a large enough one "
           "(RMSProp, 0.0045 to 0.45)")

# Plain-Keras anchor on flowers5 at 128 px, 5 epochs, Adam, batch 32, better of two LRs
# (../shared/notes/stack.md): (test top-1 %, trained parameters).
ANCHOR = {
    "last": (84.7, 6405),
    "sb+last": (76.0, 40517),
    "sb": (56.0, 34112),
    "dw+last": (82.7, 70629),
    "full": (76.7, 2230277),
}
ANCHOR_SETUP = "plain Keras, flowers5, 128 px, 5 epochs, Adam, batch 32, BN in training mode (momentum 0.999)"
