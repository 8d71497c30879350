"""vheight: vertebral body height morphometry on lateral spine radiographs.

Before and after vertebral augmentation (kyphoplasty, vertebroplasty): six
endplate landmarks per vertebra give anterior, middle and posterior heights,
their ratios, height loss and Genant grade, wedge and segmental kyphosis
angles, and the restoration achieved between films.
"""

from __future__ import annotations

__version__ = "0.1.0"
