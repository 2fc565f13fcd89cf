"""Monitoring: the Prometheus exporter (GPU metrics under DCGM names, job metrics), the run
report, structured logs."""
