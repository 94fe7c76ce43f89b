"""Reviewing a result layer in the uncertainty-ranked queue, and adding a missed object
with one click.

Modules:
    controller  :class:`~.controller.ReviewController`: the dock's Review section
                (:mod:`..dock.review`) on the active result layer
    click       :class:`~.click.ClickTool`: the map tool of Add by click, and the
                ``region`` request it sends
"""
