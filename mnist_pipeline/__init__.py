"""The code the pipeline's stages share: params, data formats, the models, metrics, figures."""
