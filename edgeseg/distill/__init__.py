"""`edgeseg distill`: a smaller U-Net that fits a latency budget, taught by the user's model on
the user's own unlabelled frames.

* :mod:`~edgeseg.distill.frames`: the frames (folder, video, stack, ``synthetic://``), checked
  against the teacher, prepared as the runtime prepares them, with the teacher's probabilities
  on each (the soft targets; an instance model's two heads) and its label maps on the frames
  held back.
* :mod:`~edgeseg.distill.search`: the students that could be trained (architecture x width),
  each converted to int8 at the frame size as ``edgeseg convert`` would and its latency
  measured in a child process on the runtime ``--backend auto`` picks, or predicted from its
  multiply-accumulates and a device profile's ``int8_gmacs``.
* :mod:`~edgeseg.distill.student`: training on soft targets, early stopping on the held-back
  frames' agreement with the teacher.
* :mod:`~edgeseg.distill.report`: the JSON and Markdown report written beside the student.
* :mod:`~edgeseg.distill.run`: the command, bounded by ``--max-minutes`` as a whole.
"""
