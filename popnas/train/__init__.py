"""Training layer: datasets, the Keras model builder, proxy training and its measurements.

Imported by trainers only; the operator and the search loop reach it through the trainer entry point.
"""
