from __future__ import annotations

import pytest
from mgft.spec.names import DNS1035, MAX_NAME_LEN, derive_name


@pytest.mark.parametrize("model", ["/models/Llama-3.1-8B-Instruct/", "/m/_x", "/m/123",
                                   "/m/" + "ü" * 80, "/m/" + "long-name-" * 20, "", "/"])
def test_derived_names_are_dns1035_and_bounded(model: str) -> None:
    name = derive_name(model, {"a": 1})
    assert DNS1035.match(name) and len(name) <= MAX_NAME_LEN, name


def test_name_depends_on_content_only() -> None:
    assert derive_name("/m/llama", {"a": 1, "b": 2}) == derive_name("/m/llama", {"b": 2, "a": 1})
    assert derive_name("/m/llama", {"a": 1}) != derive_name("/m/llama", {"a": 2})
    assert derive_name("/x/Llama-3.1-8B", {}).startswith("mgft-llama-3-1-8b-")
