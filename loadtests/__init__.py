"""Load generator and benchmark report for tiergate.

``scenario`` parses a scenario file, ``arrivals`` draws arrival times, ``client`` sends one
request and measures it, ``runner`` drives open- and closed-loop load, ``policies`` picks the
model field per request (the fixed baselines and tiergate's router), ``summary`` turns results
into figures, ``overhead`` compares the engine in-process with the gateway, and ``report``
runs the standard report (``python -m loadtests.report``).
"""
