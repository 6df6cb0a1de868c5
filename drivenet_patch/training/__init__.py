"""Training steering models (`pdn train`, `pdn eval`): configs, data views, augmentation, viewpoint shift,
several processes, TensorBoard logging and held-out evaluation."""
