"""kmsctl command-line parsing and value conversion, without an agent."""

from __future__ import annotations

import io

import pytest

from client import cli
from client.errors import InvalidParameterError, MissingParameterError


def convert(name: str, text: str, stdin: bytes = b""):
    return cli.convert_params({name: text}, io.BytesIO(stdin))[name]


def test_operation_and_parameters_parsed():
    """An operation takes --Name value and --Name=value parameters."""
    invocation = cli.parse_command_line(
        ["Encrypt", "--KeyId", "alias/app", "--Plaintext=a=b"])
    assert invocation.command == "Encrypt"
    assert invocation.params == {"KeyId": "alias/app", "Plaintext": "a=b"}


def test_global_options_anywhere():
    """--socket and --timeout are read before or after the operation."""
    invocation = cli.parse_command_line(
        ["--socket", "/tmp/a.sock", "ListKeys", "--timeout", "2.5"])
    assert invocation.socket == "/tmp/a.sock"
    assert invocation.timeout == 2.5
    assert invocation.params == {}


def test_dash_value_taken_verbatim():
    """A value of - or a leading dash is taken as the option's value."""
    invocation = cli.parse_command_line(["Decrypt", "--CiphertextBlob", "-"])
    assert invocation.params == {"CiphertextBlob": "-"}


@pytest.mark.parametrize("argv", [
    ["ListKeys", "--page-size", "3"],
    ["ListKeys", "--PageSize"],
    ["ListKeys", "--PageSize", "1", "--PageSize", "2"],
    ["ListKeys", "-x", "1"],
    ["ListKeys", "extra"],
    ["list-keys"],
    ["ListKeys", "--timeout", "0"],
    ["ListKeys", "--timeout", "soon"],
])
def test_bad_command_lines_rejected(argv):
    """Unknown, repeated or valueless options and stray words are rejected."""
    with pytest.raises(InvalidParameterError):
        cli.parse_command_line(argv)


def test_help_flag_parsed():
    """--help is recognised anywhere on the command line."""
    assert cli.parse_command_line(["Encrypt", "--help"]).help


def test_file_command_paths_parsed():
    """encrypt-file takes its parameters and two paths, IN and OUT."""
    invocation = cli.parse_command_line(
        ["encrypt-file", "--KeyId", "k", "in.txt", "-"])
    assert invocation.command == "encrypt-file"
    assert invocation.paths == ["in.txt", "-"]


def test_double_dash_ends_options():
    """After --, words that start with dashes are paths."""
    invocation = cli.parse_command_line(
        ["decrypt-file", "--", "--odd-name", "out"])
    assert invocation.paths == ["--odd-name", "out"]


def test_encrypt_file_needs_key_id():
    """encrypt-file without --KeyId is a missing parameter."""
    with pytest.raises(MissingParameterError):
        cli.parse_command_line(["encrypt-file", "in", "out"])


@pytest.mark.parametrize("argv", [
    ["decrypt-file", "in"],
    ["decrypt-file", "in", "out", "more"],
    ["decrypt-file", "--KeyId", "k", "in", "out"],
])
def test_file_command_misuse_rejected(argv):
    """File commands need two paths and take only their own parameters."""
    with pytest.raises(InvalidParameterError):
        cli.parse_command_line(argv)


def test_json_object_becomes_map():
    """JSON object text becomes a map."""
    assert convert("EncryptionContext", '{"app": "x"}') == {"app": "x"}


def test_json_array_becomes_list():
    """JSON array text becomes a list."""
    filters = '[{"Key": "KeyState", "Values": ["Enabled"]}]'
    assert convert("Filters", filters) == [{"Key": "KeyState", "Values": ["Enabled"]}]


def test_invalid_json_rejected():
    """Text that starts like JSON but does not parse is rejected."""
    with pytest.raises(InvalidParameterError):
        convert("EncryptionContext", '{"app": ')


def test_base64_becomes_bytes():
    """A binary parameter given as Base64 is sent as bytes."""
    assert convert("CiphertextBlob", "AAEC/w==") == b"\x00\x01\x02\xff"


def test_invalid_base64_rejected():
    """A binary parameter that is not Base64 is rejected."""
    with pytest.raises(InvalidParameterError):
        convert("CiphertextBlob", "not base64!")


def test_plaintext_sent_as_utf8():
    """Plaintext text is sent as its UTF-8 bytes, not decoded as Base64."""
    assert convert("Plaintext", "héllo") == "héllo".encode()


@pytest.mark.parametrize("name", ["NumberOfBytes", "PendingWindowInDays",
                                  "PageNumber", "PageSize"])
def test_numeric_parameters_become_integers(name):
    """Known numeric parameters are sent as integers."""
    assert convert(name, "64") == 64


def test_invalid_integer_rejected():
    """A numeric parameter that is not an integer is rejected."""
    with pytest.raises(InvalidParameterError):
        convert("NumberOfBytes", "32.5")


def test_other_numbers_stay_text():
    """Digits in a parameter that is not numeric stay text."""
    assert convert("KeyId", "1234") == "1234"


def test_booleans_converted():
    """true and false become booleans."""
    assert convert("EnableAutomaticRotation", "true") is True
    assert convert("DryRun", "false") is False


def test_verbatim_parameters_stay_text():
    """Free-text parameters are never converted, even if they look like JSON."""
    assert convert("Description", "true") == "true"
    assert convert("SecretData", '{"user": "a"}') == '{"user": "a"}'


def test_file_value_read(tmp_path):
    """file:// reads a value, dropping one trailing newline."""
    path = tmp_path / "blob.b64"
    path.write_text("AAEC\n")
    assert convert("CiphertextBlob", f"file://{path}") == b"\x00\x01\x02"


def test_file_plaintext_read_raw(tmp_path):
    """Plaintext from a file is sent as its raw bytes, newline included."""
    path = tmp_path / "data.bin"
    path.write_bytes(b"\xff\xfe\n")
    assert convert("Plaintext", f"file://{path}") == b"\xff\xfe\n"


def test_file_json_read(tmp_path):
    """A JSON map read from a file becomes a map."""
    path = tmp_path / "context.json"
    path.write_text('{"app": "x"}\n')
    assert convert("EncryptionContext", f"file://{path}") == {"app": "x"}


def test_missing_file_rejected(tmp_path):
    """A file:// path that cannot be read is rejected with the path."""
    with pytest.raises(InvalidParameterError) as caught:
        convert("Plaintext", f"file://{tmp_path}/absent")
    assert "absent" in caught.value.message


def test_stdin_value_read():
    """- reads a text value from stdin, dropping one trailing newline."""
    assert convert("KeyId", "-", stdin=b"alias/app\n") == "alias/app"


def test_stdin_plaintext_read_raw():
    """Plaintext from stdin is sent as its raw bytes."""
    assert convert("Plaintext", "-", stdin=b"\x00\xff\n") == b"\x00\xff\n"


def test_non_utf8_text_rejected():
    """A text value read from stdin must be UTF-8."""
    with pytest.raises(InvalidParameterError):
        convert("KeyId", "-", stdin=b"\xff")


def test_two_stdin_values_rejected():
    """Only one parameter can be read from stdin."""
    with pytest.raises(InvalidParameterError):
        cli.convert_params({"KeyId": "-", "Plaintext": "-"}, io.BytesIO(b"x"))


def test_reply_bytes_shown_base64():
    """Bytes in a reply are printed as Base64 inside indented JSON."""
    text = cli.format_reply({"CiphertextBlob": b"\x00\x01", "Keys": {"Key": []}})
    assert '"CiphertextBlob": "AAE="' in text
    assert text.startswith("{\n  ")
