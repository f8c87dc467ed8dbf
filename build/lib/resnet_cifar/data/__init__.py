"""Data sets and batches: CIFAR-10/100 pickles, image folders and their cache, augmentation, the batch
loader."""
