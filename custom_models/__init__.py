"""The method: networks, hyperparameter models, the hypergradient, the train/test loops;
imports only custom_common and custom_transforms."""
