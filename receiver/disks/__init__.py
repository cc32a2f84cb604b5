"""Target disk preparation: rebuild the source's layout on the receiver's disks.

* :mod:`receiver.disks.layout`: the planned layout as typed records, read from and
  written to its JSON form;
* :mod:`receiver.disks.plan`: pure ``plan_layout(manifest, plan, targets)`` and the text
  rendering for review;
* :mod:`receiver.disks.render`: pure sfdisk scripts, mkfs/mkswap and LVM argv;
* :mod:`receiver.disks.probe`: run one command / parse its output (pure parsers);
* :mod:`receiver.disks.apply`: the effects (wipe, partition, mkfs, LVM, mount) and the
  entry points ``prepare()``, ``review()`` and ``release()``.
"""

