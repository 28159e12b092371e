"""The client of SKA long running commands, one concept per module (private).

Its public face is :mod:`ska_tango_scheduler.long_running_commands`, which holds the
user documentation and re-exports the public names. The modules, from the bottom up:

* ``limits``: sizes, timeouts and intervals;
* ``errors``: the exceptions and the ``DevError`` reasons of the client;
* ``proxies``: proxies from TRLs, device names and keys, devices served here;
* ``protocol``: version negotiation, attribute names, decoding of the wire values;
* ``interpreter``: updates into callback calls (pure: no Tango call, no lock);
* ``outbox``: the calls waiting for the user's callback, in order, and the updates
  kept until the command's reply;
* ``service``: the lanes service running status checks, replays and releases;
* ``ports``: what the client needs of a scheduler (a ``Protocol``), the module's
  own scheduler and the LRC queues;
* ``status``: asking the device about a command, and the outcome-lost clock;
* ``invocation``: one call of ``invoke_lrc``, tying the pieces together;
* ``handle``: the object ``invoke_lrc`` returns, and the release when it is dropped;
* ``client``: ``invoke_lrc`` and ``connect_lrc_interface`` / ``disconnect_lrc_interface``.

The package uses the scheduler through its public face only (see ``ports``).
"""

import logging

#: The client's logger: it keeps the name of the public module.
LOGGER = logging.getLogger("ska_tango_scheduler.long_running_commands")
