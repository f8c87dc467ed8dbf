"""CIFAR-100's 20 superclasses and their 5 classes each, as the data set's meta file names them
(Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images", appendix D).

They let an image-folder copy of CIFAR-100 train on the coarse labels, and reports on the fine
labels group their 100 classes into 20 readable blocks.
"""
from __future__ import annotations

from collections.abc import Sequence

SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
COARSE_CLASSES = tuple(SUPERCLASSES)  # sorted, as in meta's coarse_label_names
FINE_CLASSES = tuple(sorted(name for members in SUPERCLASSES.values() for name in members))
SUPERCLASS_OF = {name: coarse for coarse, members in SUPERCLASSES.items() for name in members}


def superclasses_of(classes: Sequence[str]) -> list[str] | None:
    """Each class's superclass when `classes` are CIFAR-100's 100 fine classes (in any order), else None."""
    if sorted(classes) != list(FINE_CLASSES):
        return None
    return [SUPERCLASS_OF[name] for name in classes]
