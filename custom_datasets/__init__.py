"""The data: reading datasets and folders, the distorted split, batches; imports only
custom_common and custom_transforms."""
