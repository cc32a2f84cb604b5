"""``go2aliyun migrate``: the whole flow on the source, resumable from ``client_data``.

1. check that rsync is installed, run the preflight (:mod:`source_script.preflight`);
2. open (or resume) the session: pin the fingerprint, trade the token once;
3. send the manifest (inventory) and the plan, ask the receiver to prepare its
   disks and wait for ``READY_FOR_DATA``;
4. run a sync pass: rsync each disk through the TLS bridge, report it finished;
   ``--sync-only`` stops after a non-final pass (repeatable), ``--cutover`` (and the
   default run) makes the pass final, after which the receiver converts, verifies and
   snapshots;
5. wait for ``IMAGE_READY``/``RELEASED`` and print ``Goto Aliyun Finished!``.

Every step reads the receiver's state first, so a rerun after any interruption
(SIGKILL of this script, a restart of the receiver, a cut link) continues where the
migration stands; rsync then sends only what is missing.
"""

import fcntl
import logging
import os
import sys
import time

from source_script import allinone, check, preflight, push, tlsbridge
from source_script import session as sess
from wire import DATA_PORT, clientdata
from wire import logs as wlogs
from wire.errors import (
    ConfigError,
    Go2AliyunError,
    NetworkError,
    ReceiverError,
    StateError,
)
from wire.logs import register_secret
from wire.paths import target_path

log = logging.getLogger(__name__)

TOKEN_ENV = "GO2ALIYUN_TOKEN"  # noqa: S105 - the name of the variable, not a token
FULL, SYNC_ONLY, CUTOVER = "full", "sync-only", "cutover"
DONE_STATES = ("IMAGE_READY", "RELEASED")
WORK_STATES = ("CONVERTING", "VERIFYING", "SNAPSHOTTING")
FINISHED = "Goto Aliyun Finished!"
NOT_FINISHED = "Goto Aliyun Not Finished!"


class Options(object):
    """What ``go2aliyun migrate`` was asked to do."""

    def __init__(self, workdir=".", config=None, root="/", receiver=None, token=None,
                 fingerprint=None, mode=FULL, yes=False, progressfile=None, io_timeout=300,
                 retries=3, overrides=None, echo=None, confirm=None, poll_interval=2.0,
                 no_check=False, launch=None):
        self.workdir = os.path.abspath(workdir or ".")
        self.config = config
        self.root = os.path.abspath(root or "/")
        self.receiver = receiver
        self.token = token
        self.fingerprint = fingerprint
        self.mode = mode
        self.yes = yes
        self.progressfile = progressfile
        self.io_timeout = int(io_timeout)
        self.retries = int(retries)
        self.overrides = overrides or {}
        self.echo = echo or (lambda text: sys.stderr.write(text + "\n"))
        self.confirm = confirm
        self.poll_interval = poll_interval
        self.no_check = no_check
        self.launch = launch  # allinone.LaunchOptions (all-in-one mode knobs) or None


class Outcome(object):
    def __init__(self, finished, message, image=None, log_path=None):
        self.finished = finished
        self.message = message
        self.image = image
        self.log_path = log_path


# ------------------------------------------------------------------ helpers

def disk_sources(plan, root):
    """[(disk name, source folder)] in push order: the system disk, then data disks."""
    out = [("system", target_path(root, "/"))]
    for d in sorted(plan.get("data_disks") or [], key=lambda d: int(d["index"])):
        out.append(("disk%d" % int(d["index"]), target_path(root, d["src_path"])))
    return out


class Terminal(object):
    """Progress on the terminal: one rewritten line on a tty; if not (a log, a pipe), a
    line when the text changed (at most every 10 s) and otherwise one a minute."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._text = None
        self._open = False

    def progress(self, text):
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self._open = True
        else:
            quiet = time.time() - self._last
            if (text != self._text and quiet >= 10) or quiet >= 60:
                self.stream.write(text + "\n")
                self._last = time.time()
                self._text = text
        self.stream.flush()

    def end(self):
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _lock(workdir):
    path = os.path.join(workdir, ".go2aliyun.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError("another `go2aliyun migrate` runs in %s" % workdir,
                          code="config.busy", hint="wait for it or stop it first") from None
    return fd


def _receiver_settings(opts, data):
    recv = dict(data.get("receiver") or {})
    address = opts.receiver or recv.get("address")
    fingerprint = opts.fingerprint or recv.get("fingerprint")
    token = opts.token or os.environ.get(TOKEN_ENV) or recv.get("token")
    if token:
        register_secret(token)
    if not address:
        raise ConfigError("no receiver address", code="config.receiver_missing",
                          hint="pass --receiver ADDR or set receiver.address in client_data; "
                               "or put access_id and secret_key in user_config.json and "
                               "pass --receiver-image to launch one (all-in-one mode)")
    sess.parse_address(address)
    # No fingerprint: the receiver proves it knows the token before the token is sent
    # (session.Client.prove), and the certificate it proved with becomes the pin.
    fingerprint = sess.normalize_fingerprint(fingerprint) if fingerprint else None
    if data.get("migration_id") and fingerprint and (
            (recv.get("address") and recv["address"] != address)
            or (recv.get("fingerprint") and
                sess.normalize_fingerprint(recv["fingerprint"]) != fingerprint)):
        raise ConfigError(
            "client_data belongs to the migration %s with receiver %s; you named %s"
            % (data["migration_id"], recv.get("address"), address),
            code="config.receiver_changed",
            hint="run `go2aliyun clear` to start a new migration with this receiver")
    return address, fingerprint, token


# --------------------------------------------------------------------- flow

class Migration(object):
    def __init__(self, opts):
        self.opts = opts
        self.workdir = opts.workdir
        self.term = Terminal()
        self.client = None
        self.session = {}
        self.host = None
        self.preflight = None  # preflight.Preflight, set by run()

    def say(self, text):
        self.term.end()
        log.info("%s", text)
        self.opts.echo(text)

    def stage(self, stage, percent):
        push.write_progressfile(self.opts.progressfile, stage, percent)

    # -- session
    def open(self):
        data = clientdata.load(self.workdir)
        address, fingerprint, token = _receiver_settings(self.opts, data)
        self.host = sess.parse_address(address)[0]
        recv = dict(data.get("receiver") or {})
        recv.update({"address": address, "fingerprint": fingerprint})
        sdir = clientdata.session_dir(self.workdir)
        cert = os.path.join(sdir, sess.CERT_FILE)
        key = os.path.join(sdir, sess.KEY_FILE)
        if os.path.exists(cert) and os.path.exists(key):
            # a session was opened before (also when the run died right after the
            # trade, before client_data learnt the migration id)
            recv.pop("token", None)
            if not fingerprint:  # the receiver's certificate came with the session
                fingerprint = sess.ca_fingerprint(sdir)
                recv["fingerprint"] = fingerprint
            self.client = sess.Client(address, fingerprint, cert=cert, key=key)
            self.session = data.get("session") or {"dir": clientdata.SESSION_DIR,
                                                   "data_port": DATA_PORT}
            migration_id = data.get("migration_id") or self.current().get("id")
            clientdata.update(self.workdir, receiver=recv, migration_id=migration_id,
                              session=self.session)
            log.info("resuming migration %s with receiver %s", migration_id, address)
            return
        self.say("Opening a session with the receiver %s ..." % address)
        client, answer = sess.open_session(address, fingerprint, token, sdir, say=self.say)
        recv.pop("token", None)
        recv["fingerprint"] = client.fingerprint  # proven: the pin of every later run
        self.session = {"dir": clientdata.SESSION_DIR,
                        "data_port": int(answer.get("data_port") or DATA_PORT),
                        "modules": answer.get("modules") or {}}
        clientdata.update(self.workdir, receiver=recv, migration_id=answer.get("migration_id"),
                          session=self.session, status="Connected", started_at=clientdata.now())
        self.client = client

    def bridge(self):
        sdir = clientdata.session_dir(self.workdir)
        return tlsbridge.bridge_env(self.session.get("data_port") or DATA_PORT,
                                    self.client.fingerprint,
                                    os.path.join(sdir, sess.CERT_FILE),
                                    os.path.join(sdir, sess.KEY_FILE),
                                    timeout=min(60, self.opts.io_timeout))

    def wait(self, done, what, stage=None):
        def show(doc):
            p = doc.get("progress") or {}
            pct = p.get("percent") or 0
            if stage:
                self.stage(stage, min(99, int(pct)))
            self.term.progress("%s: %s %s%% %s" % (what, doc.get("state"), pct,
                                                   p.get("message") or ""))
        doc = sess.wait_for(self.client, done, interval=self.opts.poll_interval,
                            on_poll=show, patience=self.opts.io_timeout)
        self.term.end()
        return doc

    def current(self):
        """The migration document, waiting out a short receiver restart."""
        return self.retrying(lambda: self.client.migration())

    # -- steps
    def plan_and_prepare(self, manifest, plan):
        self.stage("PrepareForRsync", 0)
        self.say("Sending the manifest and the plan ...")
        doc = self.client.put_manifest(manifest, plan)
        review = doc.get("plan_review")
        if review:
            self.say(review)
        if not self.opts.yes and self.opts.confirm is not None and not self.opts.confirm(
                "The receiver will prepare its target disks as above. Continue?"):
            raise ConfigError("stopped before preparing the target disks", code="usage.aborted")
        self.client.prepare()
        self.say("The receiver prepares its disks ...")
        self.wait(lambda d: d.get("state") not in ("PLANNED", "PREPARING"), "preparing")
        self.stage("PrepareForRsync", 100)

    def run_pass(self, plan, final):
        sources = disk_sources(plan, self.opts.root)
        answer = self.client.start_sync(final)
        number = answer.get("pass")
        modules = answer.get("modules") or self.session.get("modules") or {}
        clientdata.update(self.workdir, status="Syncing",
                          current_pass={"number": number, "final": bool(final),
                                        "finished": False, "started_at": clientdata.now()})
        self.say("Sync pass %s%s: %s" % (number, " (final)" if final else "",
                                         ", ".join(d for d, _ in sources)))
        progress = push.Progress([d for d, _ in sources], progressfile=self.opts.progressfile,
                                 echo=self.term.progress)
        self.stage("DoRsync", 0)
        stats = {}
        for disk, source in sources:
            mod = (modules.get(disk) or {}).get("module")
            if not mod:
                raise ReceiverError("the receiver opened no module for %r (it has %s)"
                                    % (disk, ", ".join(sorted(modules)) or "none"),
                                    code="receiver.module_missing",
                                    hint="check data_disks in user_config.json against the "
                                         "target disks of the receiver")
            clientdata.set_disk(self.workdir, disk, state="syncing", number=number)
            began = time.time()
            st = self.push_with_retries(disk, source, mod, plan, progress)
            seconds = round(time.time() - began, 3)
            progress.finished(disk)
            self.term.end()
            clientdata.set_disk(self.workdir, disk, state="synced", number=number,
                                bytes=st.get("total_size", 0), files=st.get("files", 0),
                                literal_bytes=st.get("literal_bytes", 0),
                                transferred_files=st.get("transferred_files", 0),
                                seconds=seconds)
            stats[disk] = {"bytes": st.get("total_size", 0), "files": st.get("files", 0),
                           "literal_bytes": st.get("literal_bytes", 0),
                           "transferred_files": st.get("transferred_files", 0)}
            self.say("  %s: %s files, %s sent" % (disk, st.get("files", 0),
                                                  push.human_bytes(st.get("literal_bytes", 0))))
        doc = self.retrying(lambda: self.client.finish_sync(number, stats))
        clientdata.update(self.workdir, status="Synced" if not final else "Converting",
                          current_pass={"number": number, "final": bool(final),
                                        "finished": True, "finished_at": clientdata.now()})
        self.stage("DoRsync", 100)
        return doc

    def retrying(self, call):
        """``call()``, called again while the receiver is unreachable (up to --io-timeout)."""
        start = time.time()
        while True:
            try:
                return call()
            except NetworkError:
                if time.time() - start > self.opts.io_timeout:
                    raise
                time.sleep(self.opts.poll_interval)

    def push_with_retries(self, disk, source, module, plan, progress):
        attempt = 0
        while True:
            try:
                return push.push_disk(
                    disk, source, self.host, module, self.bridge(),
                    rules=(plan.get("filters") or {}).get(disk, []), workdir=self.workdir,
                    bwlimit=plan.get("bandwidth_limit") or 0, timeout=self.opts.io_timeout,
                    on_progress=progress.update)
            except NetworkError as e:
                attempt += 1
                self.term.end()
                if attempt > self.opts.retries:
                    raise
                log.warning("%s; retry %d of %d", e, attempt, self.opts.retries)
                self.opts.echo("The transfer of %s was interrupted (%s); retrying ..."
                               % (disk, e.code))
                self.current()  # waits until the receiver answers again
                time.sleep(min(30, 2 ** attempt))

    def run(self):
        opts = self.opts
        push.require_rsync()
        pre = self.preflight = preflight.run(opts.config, opts.workdir, opts.root,
                                             opts.overrides)
        for f in pre.findings:
            if f["severity"] in ("warning", "blocker"):
                log.warning("check %s: %s: %s", f["check"], f["severity"], f["message"])
        if not pre.ok:
            if not opts.no_check:
                raise check.failure(pre.report())
            self.say("Preflight blockers ignored (--no-check): %s" % "; ".join(
                f["check"] for f in pre.findings if f["severity"] == "blocker"))
        data = clientdata.load(self.workdir)
        # all-in-one mode: this run launches (or has launched) the intermediate instance
        aio = allinone.prepare(self.workdir, pre.config, opts.receiver, data,
                               opts.launch or allinone.LaunchOptions(), echo=self.say)
        if aio is not None:
            try:
                return self.run_all_in_one(aio, data)
            except (Exception, KeyboardInterrupt):
                hint = aio.cleanup_hint()
                if hint:
                    self.say(hint)
                raise
        return self.run_receiver(data)

    def run_all_in_one(self, aio, data):
        if data.get("status") == "Finished":
            aio.image_ready(data.get("image"))
            note = aio.release() if not aio.released() else "nothing left to release"
            return Outcome(True, "this migration already finished (%s); %s"
                           % (_image_text(data.get("image")), note), image=data.get("image"))
        address, fingerprint, token = aio.launch()
        self.opts.receiver, self.opts.fingerprint, self.opts.token = address, fingerprint, token
        outcome = self.run_receiver(clientdata.load(self.workdir))
        if outcome.finished:
            try:
                aio.image_ready(outcome.image)
                note = aio.release()
            except Go2AliyunError as e:
                note = "could not release the intermediate resources (%s [%s]); %s" % (
                    e, e.code, aio.cleanup_hint())
            outcome.message = "%s; %s" % (outcome.message, note)
        return outcome

    def run_receiver(self, data):
        """The flow against a known receiver (named, or launched above)."""
        opts = self.opts
        manifest, plan = self.preflight.manifest, self.preflight.plan
        self.open()
        if data.get("status") == "Finished":
            doc = self.current()
            return Outcome(True, "this migration already finished (%s); run "
                           "`go2aliyun clear` to start a new one" % _image_text(doc.get("image")),
                           image=doc.get("image"))
        passes_done = 0
        retried = False
        first = True
        while True:
            doc = self.current()
            state = doc.get("state")
            log.info("receiver state: %s", state)
            was_first, first = first, False
            if state in ("NEW", "PLANNED"):
                self.plan_and_prepare(manifest, plan)
            elif state == "PREPARING":
                self.wait(lambda d: d.get("state") != "PREPARING", "preparing")
            elif state == "FAILED":
                # retry a step that failed before this run (the seed: "run it again and
                # it continues"); a failure that happens during this run ends it
                if retried or not was_first:
                    raise sess.failed_error(doc)
                err = doc.get("error") or {}
                self.say("The receiver's step %s had failed (%s); retrying it ..."
                         % (err.get("step"), err.get("message") or err.get("code")))
                retried = True
                self.client.retry()
            elif state in ("READY_FOR_DATA", "SYNCING"):
                if opts.mode == SYNC_ONLY:
                    if passes_done:
                        return Outcome(False, "sync pass done; run `go2aliyun migrate "
                                       "--sync-only` again for another delta pass, or "
                                       "`go2aliyun migrate --cutover` with applications "
                                       "stopped to finish", image=None)
                    self.run_pass(plan, final=False)
                    passes_done += 1
                    continue
                if passes_done and state == "READY_FOR_DATA":
                    self.client.finalize()
                    continue
                self.run_pass(plan, final=True)
                passes_done += 1
            elif state in WORK_STATES:
                self.stage("CreateImage", 0)
                self.say("The receiver converts the copy and makes the image ...")
                self.wait(lambda d: d.get("state") in DONE_STATES, "image", "CreateImage")
            elif state in DONE_STATES:
                clientdata.update(self.workdir, status="Finished", image=doc.get("image"),
                                  finished_at=clientdata.now())
                self.stage("Finished", 100)
                return Outcome(True, _image_text(doc.get("image")),
                               image=doc.get("image"))
            else:
                raise StateError("the receiver is in an unknown state %r" % state,
                                 code="state.unknown")


def _image_text(image):
    """What the receiver made, for people: ``image <id or folder>``, or for disks handed
    over to the cloud side (the local provider's VM) what runs next."""
    if not image:
        return "image (no id reported)"
    if not isinstance(image, dict):
        return "image %s" % image
    made = image.get("id") or image.get("image_id") or image.get("path")
    if made:
        return "image %s" % made
    if image.get("by") == "host":
        return "the converted disks are handed over; next: %s" % (
            image.get("next") or "the cloud side makes the image")
    return "image (no id reported)"


def start_logging(workdir, verbose=False):
    logdir = os.path.join(workdir, "logs")
    path = os.path.join(logdir, "go2aliyun-%s-%d.log" % (time.strftime("%Y%m%d-%H%M%S"),
                                                         os.getpid()))
    wlogs.setup(path, verbose=verbose)
    return path


def migrate(opts, verbose=False):
    """Run the flow; returns an :class:`Outcome` or raises with ``log_path`` set."""
    if not os.path.isdir(opts.workdir):
        raise ConfigError("the work folder %s does not exist" % opts.workdir,
                          hint="pass --workdir DIR (the folder with user_config.json)")
    if opts.token:
        register_secret(opts.token)
    if os.environ.get(TOKEN_ENV):
        register_secret(os.environ[TOKEN_ENV])
    log_path = start_logging(opts.workdir, verbose)
    log.info("go2aliyun migrate: workdir %s root %s mode %s", opts.workdir, opts.root,
             opts.mode)
    lock = _lock(opts.workdir)
    try:
        outcome = Migration(opts).run()
        outcome.log_path = log_path
        return outcome
    except KeyboardInterrupt as e:  # Ctrl-C: no traceback on the terminal, one in the log
        log.warning("not finished: interrupted (Ctrl-C)")
        log.info("where it was interrupted", exc_info=True)
        e.log_path = log_path
        raise
    except Exception as e:  # noqa: BLE001 - annotated and re-raised
        log.error("not finished: %s", e, exc_info=not hasattr(e, "code"))
        e.log_path = log_path
        raise
    finally:
        os.close(lock)
