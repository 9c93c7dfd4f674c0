"""`python -m training ...`: the same command as `muse-infer train ...`."""

from .cli import train_command

if __name__ == "__main__":
    train_command(prog_name="python -m training")
