"""The driver side: fans jobs out over Ray, gathers, blends, audits, reports."""
