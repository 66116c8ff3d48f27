"""Near-line training (``mtlrec train --follow``): partition sources that list complete
hourly partitions, the loop that scores then trains each one as it lands, the export
cadence, and what the run's state records about skipped, late and rewritten partitions."""
