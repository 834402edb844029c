"""Per-task cron schedules: cron evaluation in a time zone (``cron``) and the Periodiq tick (``tick``)."""
