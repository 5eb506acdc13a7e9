"""Reference values the report compares city figures with (WHO 2021 comes from aggregators.who).

EU air-quality standards, µg/m³:
- Directive 2008/50/EC Annex XI (in force until the recast's 2030 values apply): annual limit values, and daily
  limit values with the number of exceedances allowed per calendar year.
- Directive (EU) 2024/2881 (the recast), Annex I, limit values to be met by 1 January 2030.
The END noise thresholds live in aggregators.noise (END_LDEN_THRESHOLD, END_LNIGHT_THRESHOLD).
"""

from __future__ import annotations

from typing import Final

__all__ = ["EU_2008_ANNUAL", "EU_2008_DAILY", "EU_2030_ANNUAL", "EU_2030_DAILY", "EU_DATA_CAPTURE"]

EU_2008_ANNUAL: Final[dict[str, float]] = {"pm2_5": 25.0, "pm10": 40.0, "no2": 40.0}
# pollutant -> (daily limit, exceedances allowed per calendar year)
EU_2008_DAILY: Final[dict[str, tuple[float, int]]] = {"pm10": (50.0, 35), "so2": (125.0, 3)}
EU_2030_ANNUAL: Final[dict[str, float]] = {"pm2_5": 10.0, "pm10": 20.0, "no2": 20.0, "so2": 20.0}
EU_2030_DAILY: Final[dict[str, tuple[float, int]]] = {"pm2_5": (25.0, 18), "pm10": (45.0, 18), "no2": (50.0, 18),
                                                       "so2": (50.0, 18)}
# Minimum data capture for fixed measurements of a calendar-year mean: 90 % (2008/50/EC Annex I; kept by the
# 2024 recast). The report applies it to every period figure.
EU_DATA_CAPTURE: Final = 0.90
