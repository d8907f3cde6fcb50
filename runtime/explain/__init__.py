"""Pictures and numbers that explain a model: the graph drawing, RG-Flow latents, receptive
fields and inpainting (``flowdsl explain``, ``flowdsl graph``)."""
