// Markdown tables in the layout of the paper's Tables 4 and 5.

import Foundation
import Testing
import Evaluation

@Suite("Paper tables")
struct PaperTablesTests {
    @Test("percent formatting")
    func percent() {
        #expect(PaperTables.percent(0.91937) == "91.94")
        #expect(PaperTables.percent(1) == "100.00")
        #expect(PaperTables.percent(0.0005) == "0.05")
        #expect(PaperTables.percent(0.12) == "12.00")
        #expect(PaperTables.percent(nil) == "—")
        #expect(PaperTables.percent(-1) == "-100.00")
    }

    @Test("Table 4: AP@0.5, AP@0.75, mAP")
    func table4() throws {
        var m = BinaryMask(height: 1, width: 10)
        m.fill(x0: 0, y0: 0, x1: 4, y1: 1)
        let r = try AuthorMaskAP.evaluate(images: [(gt: [m], predictions: [(mask: m, score: 1)]), (gt: [], predictions: [(mask: m, score: 1)])])
        let table = PaperTables.table4([("C' = 64", r)])
        #expect(table == """
            | Model | AP@0.5 | AP@0.75 | mAP@[0.5:0.95] |
            |---|---:|---:|---:|
            | C' = 64 | 50.00 | 50.00 | 50.00 |

            """)
    }

    @Test("Table 5: COVID-19, CP, Normal sensitivities, accuracy, F1; Table 7 columns")
    func table5() throws {
        let m = ClassificationMetrics(confusion: try ConfusionMatrix(rows: [[50, 3, 2], [4, 30, 6], [1, 5, 20]]))
        let table = PaperTables.table5([("C' = 256", m)])
        let f1 = PaperTables.percent(m.authorF1)
        #expect(table == """
            | Model | COVID-19 | CP | Normal | Overall accuracy | F1 |
            |---|---:|---:|---:|---:|---:|
            | C' = 256 | 76.92 | 75.00 | 90.91 | 82.64 | \(f1) |

            """)
        let ictcf = ClassificationMetrics(confusion: try ConfusionMatrix(rows: [[1851, 0, 114], [0, 0, 0], [104, 0, 680]]))
        let t7 = PaperTables.table5([("C' = 64", ictcf)], columns: [("COVID-19", 2), ("Negative", 0)])
        #expect(t7.contains("| C' = 64 | 86.73 | 94.20 | 92.07 | 92.08 |"))
        #expect(PaperTables.table5([("a|b", ictcf)], columns: [("CP", 1)]).contains("| a\\|b | — |"))
    }
}
