"""Cython fast paths of the relay. Import them through ``relay._ext.load``, never directly."""
