import numpy as np
from PIL import Image


def handle(event, context):
    img = Image.fromarray(np.zeros((4, 4), dtype=np.uint8))
    return {"size": list(img.size)}
