"""The one place where a command-line tool turns errors into exit codes.

``go2aliyun``, ``go2aliyun-receiver`` and ``go2aliyun-cloud`` all end in
:func:`run_click`: click usage errors exit 2, an interrupt 130, and every
:class:`wire.errors.Go2AliyunError` prints ``error [code]: message`` (secrets
redacted) and exits with its family's code (wire/errors.py).
"""

import logging

from wire.errors import Go2AliyunError
from wire.logs import redact

log = logging.getLogger(__name__)


def run_click(cli, argv, prog_name):
    import click  # the source side has click; wire itself stays stdlib-only

    try:
        rv = cli.main(args=argv, prog_name=prog_name, standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv  # click returns the code of a click.exceptions.Exit here
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return 2 if isinstance(e, click.UsageError) else e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except Go2AliyunError as e:
        # into the debug log too (INFO: the terminal shows the line below, not this)
        log.info("%s: error [%s]: %s", prog_name, e.code, e, exc_info=True)
        click.echo("error [%s]: %s" % (e.code, redact(str(e))), err=True)
        return e.exit_code
    return 0
