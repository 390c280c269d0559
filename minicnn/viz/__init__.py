"""The pictures and the counts of a run, the top tier of minicnn.

``plots`` draws what training produced: sample images, the loss and accuracy
curves, the confusion heatmap and the per-layer gradient statistics.
``pictures`` draws what a trained network sees: first-layer filters, feature
maps, saliency maps and the misclassified images. ``report`` counts the
confusion matrix and the per-class precision, recall and F1. Every figure is
drawn on its own Agg canvas, so the user's matplotlib backend is left alone.
These modules import only from the tiers below them (the backend, file writing
and, through a model's public methods, the layers); nothing in minicnn imports
them, so matplotlib, seaborn and pandas load only when a picture or a report
is asked for.
"""
