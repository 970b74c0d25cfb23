"""Augmentation: base transforms, the policies and the affine warp, batched on the device;
imports only custom_common."""
