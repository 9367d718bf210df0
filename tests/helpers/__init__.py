"""What the tests share: sample spans, servers started on 127.0.0.1 (collector, moto, dashboard) and the
builders of their fixtures."""
