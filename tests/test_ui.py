"""What users read: library chatter goes to a log file, fastdet's own lines stay on the console."""
import subprocess
import sys
import textwrap


def test_library_output_goes_to_the_log_and_the_console_stays(tmp_path):
    log = tmp_path / "lib.log"
    code = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from fastdet_cli.outputs import library_output_to
        from fastdet_cli.ui import make_console
        console = make_console(own_fd=True)
        with library_output_to(Path({str(log)!r})):
            print("python chatter")
            os.write(1, b"native chatter\\n")
            os.write(2, b"native stderr chatter\\n")
            console.print("fastdet's own line")
        print("after")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["fastdet's own line", "after"]
    assert proc.stderr == ""
    assert log.read_text().splitlines() == ["python chatter", "native chatter", "native stderr chatter"]
