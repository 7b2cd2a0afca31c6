"""What a run offers the cluster, shared by the fast-forward simulator
(`orchestrator.sim`) and the load generator (`loadtests`): when tasks arrive
(`arrivals`, `traces`), which agents and inputs they carry (`mix`), and the task-level
objectives they are judged against (`slo`)."""
