"""django-ogc-sensorthings' Django ORM adapter, with intervals in Observation.phenomenonTime kept whole.

The package's adapter (1.2.0) stores `phenomenonTime` in `phenomenon_time_begin` as given, so an ISO 8601
interval ("start/end", which SensorThings v1.1 allows and which citygw sends for every window) fails with a
500 on create, and `$orderby=phenomenonTime` fails because the ORM has no field of that name. This subclass
splits an interval into the model's begin/end columns on create, answers the interval on read and maps
`phenomenonTime` in `$orderby` the way the package already maps it in `$filter`. Everything else is the
package's own code.
"""

from __future__ import annotations

from typing import Any

from django.db.models import F
from django.db.models.expressions import OrderBy
from pydantic.alias_generators import to_snake
from sensorthings.types import Absent, OrderByDirection, OrderByField
from sensorthings.types.iso_string import parse_iso_interval
from sensorthings.versions.v1_1.backends.django.adapter import ODATA_FIELD_REMAP, DjangoBackendAdapter
from sensorthings.versions.v1_1.backends.django.models import Observation


class IntervalAdapter(DjangoBackendAdapter):
    """The package's adapter plus interval phenomenon times."""

    @staticmethod
    def build_orderby_arg(orderby: list[OrderByField] | None = None) -> list[OrderBy]:
        """Like the package's, with phenomenonTime/validTime mapped to their begin columns."""
        return [
            getattr(F("__".join(ODATA_FIELD_REMAP.get(to_snake(p), to_snake(p)) for p in field.path)),
                    "asc" if field.direction == OrderByDirection.ASC else "desc")()
            for field in orderby or []
        ]

    def create_observations(self, payload: list[Any], context: Any = None) -> list[Any]:
        """Create as the package does, then store the end of each interval phenomenon time."""
        ends = []
        for dto in payload:
            value = dto.phenomenon_time
            if isinstance(value, str) and "/" in value:
                begin, end = parse_iso_interval(value)
                dto.phenomenon_time = begin.isoformat()
                ends.append(end)
            else:
                ends.append(None)
        ids = super().create_observations(payload, context)
        for pk, end in zip(ids, ends, strict=True):
            if end is not None:
                Observation.objects.filter(pk=pk).update(phenomenon_time_end=end)
        return ids

    def get_observations(self, *args: Any, **kwargs: Any) -> Any:
        """Read as the package does, then answer "begin/end" for observations that have an end."""
        result = super().get_observations(*args, **kwargs)
        wanted = [pk for pk, dto in result.entities.items() if dto.phenomenon_time not in (Absent, None)]
        if wanted:
            ends = dict(Observation.objects.filter(pk__in=wanted, phenomenon_time_end__isnull=False)
                        .values_list("pk", "phenomenon_time_end"))
            for pk, end in ends.items():
                dto = result.entities[pk]
                dto.phenomenon_time = f"{dto.phenomenon_time}/{end.isoformat()}"
        return result
