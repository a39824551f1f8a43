"""Typed errors, and the decorator that shows them to CLI users as one line. Every stage raises one of these with a one-line message (and, where there is one,
a hint for the next step); the CLI turns them into click.ClickException so users never see a
traceback."""


class PhiError(ValueError):
    """Base class: the message is complete and fit to show a user as one line.

    A ValueError, because llm's CLI shows ValueErrors raised by a model as one line.
    """

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class GGUFError(PhiError):
    """A file is missing, unreadable, not GGUF, malformed, or not a Phi model."""


class RegistryError(PhiError):
    """The model registry is corrupt, or an alias is unknown or already taken."""


class TemplateError(PhiError):
    """A chat template is invalid, raised an error, or tried to escape the sandbox."""


class ConversionError(PhiError):
    """A Hugging Face checkpoint cannot be converted (missing files, bad shapes, unsupported arch)."""


class QuantizationError(PhiError):
    """llama.cpp's quantizer refused or failed."""


class OutputExistsError(PhiError):
    """The output path exists and --force was not given."""


class DiskSpaceError(PhiError):
    """Not enough free disk space for an output."""


class HubError(PhiError):
    """The Hugging Face hub refused a request or is unreachable."""


class OllamaError(PhiError):
    """The Ollama server refused a request or is unreachable."""


def one_line_errors(fn):
    """For click commands: PhiError (and Ctrl-C) become a one-line click.ClickException."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import click

        try:
            return fn(*args, **kwargs)
        except PhiError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            raise click.ClickException("Interrupted; no partial output was kept") from None

    return wrapper
