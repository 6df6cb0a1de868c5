"""What a model looks at and what it costs: VisualBackProp saliency, PatchDrive patch selection and its study."""
