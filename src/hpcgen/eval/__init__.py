"""Post-hoc evaluation: Inception features, FID/KID, reference statistics, the job array."""
