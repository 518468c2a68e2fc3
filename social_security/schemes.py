"""The schemes a citizen can be enrolled in (China's social insurance law, 2010, chapters 2-3).

Medical insurance has two schemes: urban employee basic medical insurance (monthly
contributions by employer and employee, a personal account) and urban-rural resident basic
medical insurance (a yearly contribution, no personal account). Pension likewise: the employee
basic pension and the urban-rural resident pension (formerly the "new rural pension").
"""

from __future__ import annotations

from enum import StrEnum


class Scheme(StrEnum):
    EMPLOYEE_MEDICAL = "employee_medical"
    RESIDENT_MEDICAL = "resident_medical"
    EMPLOYEE_PENSION = "employee_pension"
    RESIDENT_PENSION = "resident_pension"

    @property
    def is_medical(self) -> bool:
        return self in (Scheme.EMPLOYEE_MEDICAL, Scheme.RESIDENT_MEDICAL)

    @property
    def is_employee(self) -> bool:
        return self in (Scheme.EMPLOYEE_MEDICAL, Scheme.EMPLOYEE_PENSION)

    @property
    def monthly(self) -> bool:
        """Employees contribute monthly (period YYYY-MM), residents yearly (period YYYY)."""
        return self.is_employee


MEDICAL_SCHEMES = (Scheme.EMPLOYEE_MEDICAL, Scheme.RESIDENT_MEDICAL)
PENSION_SCHEMES = (Scheme.EMPLOYEE_PENSION, Scheme.RESIDENT_PENSION)


class AccountKind(StrEnum):
    """The citizen's individual accounts: the employee medical personal account (paid into from
    contributions, paid out at the counter) and the pension individual account."""

    MEDICAL = "medical"
    PENSION = "pension"
