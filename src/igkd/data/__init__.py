"""Datasets as in-memory uint8 tensors, splits and batched augmentation."""

from igkd.data.imageset import ImageSet
from igkd.data.sources import DataConfig, load_split
from igkd.data.splits import stratified_split, stratified_subset

__all__ = ["ImageSet", "DataConfig", "load_split", "stratified_split", "stratified_subset"]
