"""Schedulers: the noise and mask schedules, kept apart from the networks that they drive.

A scheduler holds the arithmetic of a generative process and no parameters: how training
corrupts a target (noise at t, a mask ratio), what the network is trained to predict, and how
one step of the reverse process moves a sample. The networks (``argen.generators``) and the
sampling loops (``argen.sampling``) both use them, as diffusers and the official MAR code keep
their schedulers apart from their models; a scheduler imports nothing but torch, math and
``argen.config`` / ``argen.errors``.

* ``ddpm``: DDPM with improved DDPM's cosine schedule, respacing and learned variance.
* ``flow``: flow matching on the straight path, Euler and Heun steps.
* ``masking``: the mask schedules of masked generation (MaskGIT, MAR).
"""
