"""URL path convertors for FHIR REST paths (FHIR R4 http.html#general).

Routes declare ``/fhir/{resource_type:resourcetype}/{resource_id:fhirid}``: a resource type
starts with a capital (resourcelist.html) and an id is 1-64 of ``A-Za-z0-9-.``
(datatypes.html#id), so ``/fhir/metadata``, ``/fhir/_history`` and operations such as
``/fhir/Patient/$everything`` never fall into the generic routes, whatever the route order.
"""

from __future__ import annotations

from typing import ClassVar

from starlette.convertors import Convertor, register_url_convertor


class ResourceType(Convertor[str]):
    regex: ClassVar[str] = "[A-Z][A-Za-z]{1,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class FhirId(Convertor[str]):
    regex: ClassVar[str] = "[A-Za-z0-9\\-.]{1,64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class VersionId(Convertor[int]):
    regex: ClassVar[str] = "[0-9]{1,9}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("resourcetype", ResourceType())
register_url_convertor("fhirid", FhirId())
register_url_convertor("fhirversion", VersionId())
