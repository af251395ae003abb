from __future__ import annotations

import logging

from connectors.redact import MASK, RedactingFilter, Redactor, redact_credential


def test_credential_values_are_masked_keys_kept():
    assert redact_credential({"access_key": "AKIA123", "secret_key": "s3cr3t"}) == {
        "access_key": MASK,
        "secret_key": MASK,
    }


def test_redactor_masks_nested_values_and_text():
    redactor = Redactor.of(["AKIASECRET", None, "ab"])
    assert redactor.text("key AKIASECRET failed") == f"key {MASK} failed"
    assert redactor.value({"a": ["x AKIASECRET"], "b": 1}) == {"a": [f"x {MASK}"], "b": 1}
    assert redactor.value("ab") == "ab"


def test_logging_filter_masks_formatted_messages(caplog):
    logger = logging.getLogger("test-redact")
    logger.addFilter(RedactingFilter(Redactor.of(["sk-verysecret"])))
    with caplog.at_level(logging.INFO, logger="test-redact"):
        logger.info("calling with %s", "sk-verysecret")
    assert "sk-verysecret" not in caplog.text and MASK in caplog.text


def test_region_is_not_a_secret():
    assert redact_credential({"region": "us-east-1", "secret_key": "x"}) == {
        "region": "us-east-1",
        "secret_key": MASK,
    }


def test_short_url_passwords_are_masked_in_the_display_url():
    from connectors.opensearch.config import OpenSearchConfig

    assert OpenSearchConfig(url="http://admin:pw@host:9200").display_url == "http://admin:***@host:9200"
    assert OpenSearchConfig(url="http://host:9200").display_url == "http://host:9200"
