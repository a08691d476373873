// Markdown renderings of the paper's result tables (Table 4: segmentation AP; Table 5:
// classification sensitivities, accuracy and F1).

/// Which F1 a classification table reports.
public enum F1Kind: String, Codable, CaseIterable, Sendable {
    /// `ClassificationMetrics.authorF1`, the number the paper reports.
    case author
    /// `ClassificationMetrics.paperEq14F1`.
    case paperEq14
    /// `ClassificationMetrics.macroF1`.
    case macro
    /// `ClassificationMetrics.weightedF1`.
    case weighted

    func value(_ m: ClassificationMetrics) -> Double? {
        switch self {
        case .author: return m.authorF1
        case .paperEq14: return m.paperEq14F1
        case .macro: return m.macroF1
        case .weighted: return m.weightedF1
        }
    }
}

/// Markdown tables in the layout of the paper's Tables 4 and 5, values in percent with two decimals.
public enum PaperTables {
    /// Formats a fraction as a percentage with two decimals (`0.91937` → `91.94`); `—` for `nil`.
    public static func percent(_ v: Double?) -> String {
        guard let v, v.isFinite else { return "—" }
        let hundredths = (v * 10000).rounded()
        let sign = hundredths < 0 ? "-" : ""
        let a = abs(Int(hundredths))
        let frac = a % 100
        return "\(sign)\(a / 100).\(frac < 10 ? "0" : "")\(frac)"
    }

    /// Table 4: one row per model, columns AP@0.5, AP@0.75 and mAP@[0.5:0.95] (author's per-image AP).
    public static func table4(_ rows: [(model: String, result: AuthorAPResult)]) -> String {
        var lines = ["| Model | AP@0.5 | AP@0.75 | mAP@[0.5:0.95] |", "|---|---:|---:|---:|"]
        for (model, r) in rows {
            lines.append("| \(escape(model)) | \(percent(r.ap50)) | \(percent(r.ap75)) | \(percent(r.mAP)) |")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Table 5: one row per model, the sensitivities of COVID-19 (class 2), CP (class 1) and Normal
    /// (class 0), overall accuracy and F1 (by default the author's F1).
    ///
    /// `columns` names the sensitivity columns and the class index each shows (Table 7 for iCTCF:
    /// `[("COVID-19", 2), ("Negative", 0)]`). A class without samples shows `—`.
    public static func table5(_ rows: [(model: String, metrics: ClassificationMetrics)],
                              columns: [(name: String, classIndex: Int)] = [("COVID-19", 2), ("CP", 1), ("Normal", 0)],
                              f1: F1Kind = .author) -> String {
        let header = ["Model"] + columns.map(\.name) + ["Overall accuracy", "F1"]
        var lines = ["| " + header.joined(separator: " | ") + " |",
                     "|---|" + String(repeating: "---:|", count: header.count - 1)]
        for (model, m) in rows {
            var cells = [escape(model)]
            for c in columns {
                cells.append(percent(c.classIndex >= 0 && c.classIndex < m.sensitivity.count ? m.sensitivity[c.classIndex] : nil))
            }
            cells.append(percent(m.accuracy))
            cells.append(percent(f1.value(m)))
            lines.append("| " + cells.joined(separator: " | ") + " |")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func escape(_ s: String) -> String { s.split(separator: "|", omittingEmptySubsequences: false).joined(separator: "\\|") }
}
