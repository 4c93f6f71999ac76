"""The course apparatus: chapter helpers, figures of the mechanisms, plots, widgets and exercise checkers.

It imports ``model`` and ``tools``; nothing there imports it back.
"""
