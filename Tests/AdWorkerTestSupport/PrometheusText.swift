/// Reading Prometheus's text exposition in tests.
public enum PrometheusText {
    /// The value of one series, written exactly as it appears (`name{label="value"}`), or nil.
    public static func value(in text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }
}
