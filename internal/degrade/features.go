package degrade

// Features is a row of the seed's feature degradation matrix: what each
// feature does at a level.
type Features struct {
	RawIngestion string `json:"raw_ingestion"` // full, sample_50, critical_only, alerts_only
	Windowing    string `json:"windowing"`     // all, 5m_1h_only, none
	Alerting     string `json:"alerting"`      // real_time, delayed, critical_only
	CloudSync    string `json:"cloud_sync"`    // real_time, queued, aggregates_only, disabled
	LocalQueries string `json:"local_queries"` // full, cached_only, disabled
}

// matrix is the seed's feature degradation matrix, by level; emergency
// (missing from the seed's matrix) is minimal's row with raw ingestion
// "alerts only", from the seed's level table.
var matrix = [...]Features{
	Normal:    {"full", "all", "real_time", "real_time", "full"},
	Degraded:  {"full", "all", "real_time", "queued", "full"},
	Limited:   {"sample_50", "5m_1h_only", "delayed", "aggregates_only", "cached_only"},
	Minimal:   {"critical_only", "none", "critical_only", "disabled", "disabled"},
	Emergency: {"alerts_only", "none", "critical_only", "disabled", "disabled"},
}

// Row returns the matrix row of level l.
func Row(l Level) Features {
	if l < Normal || l > Emergency {
		return matrix[Emergency]
	}
	return matrix[l]
}
