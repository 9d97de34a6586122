"""The deep path: Keras 3 backbones, training and fine-tuning, the trained CNN and its TFLite
twin, Grad-CAM, image-quality augmentation. Only ``spec``, ``predictor``, ``lite``, ``degrade``
and ``kind`` are TensorFlow-free; the rest imports TensorFlow."""
