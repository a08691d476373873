import Foundation
import NN
import Tensor
import Testing
import TestSupport

/// The writer encodes every dtype it accepts in that dtype's own layout, and the reader and
/// `Module.load` trust no length, shape or value of a file (model files come from any local user).
@Suite struct SafeTensorsSafetyTests {
    /// A safetensors file with the given JSON header and `dataBytes` zero bytes of data.
    static func file(header: String, dataBytes: Int) -> Data {
        var d = Data()
        var n = UInt64(header.utf8.count).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(Data(header.utf8))
        d.append(Data(count: dataBytes))
        return d
    }

    // MARK: Writer

    @Test(arguments: [DType.f32, DType.f16, DType.bf16, DType.i64, DType.i32, DType.u8])
    func writerRoundTripsEveryDType(_ dtype: DType) throws {
        // Values every dtype holds exactly (bf16 has 8 significant bits: 255 still fits).
        let values: [Float] = [0, 1, 2, 3, 7, 100, 255, 42]
        let t = Tensor(shape: [2, 4])
        for (i, v) in values.enumerated() { t.data[i] = v }
        var w = SafeTensorsWriter()
        w.add("x", t, as: dtype)
        w.add("after", Tensor(shape: [3]))  // an entry behind it: its offsets must follow x's bytes
        let f = try SafeTensorsFile(data: try w.serialized())
        let e = try #require(f.entries["x"])
        #expect(e.dtype == dtype)
        #expect(e.shape == [2, 4])
        #expect(e.range == 0..<(8 * dtype.size))
        #expect(f.entries["after"]?.range.lowerBound == 8 * dtype.size)
        #expect(try f.tensor("x").array == values)
        if dtype == .i64 || dtype == .i32 || dtype == .u8 {
            #expect(try f.int64Values("x") == values.map { Int64($0) })
        }
    }

    @Test func integerDTypesTruncateAndSaturate() throws {
        let t = Tensor(shape: [6])
        for (i, v) in [Float(-3.7), 2.9, 300, -5, .nan, .infinity].enumerated() { t.data[i] = v }
        var w = SafeTensorsWriter()
        w.add("i32", t, as: .i32)
        w.add("i64", t, as: .i64)
        w.add("u8", t, as: .u8)
        let f = try SafeTensorsFile(data: try w.serialized())
        #expect(try f.int64Values("i32") == [-3, 2, 300, -5, 0, Int64(Int32.max)])
        #expect(try f.int64Values("i64") == [-3, 2, 300, -5, 0, Int64.max])
        #expect(try f.int64Values("u8") == [0, 2, 255, 0, 0, 255])
    }

    // MARK: Reader

    @Test func aByteCountThatOverflowsIsCorruptNotAHugeTensor() throws {
        // 2^30 · 2^30 · 4 elements fit an Int, but times 8 bytes they wrap to 0 = the stated size.
        let d = Self.file(header: #"{"a":{"dtype":"I64","shape":[1073741824,1073741824,4],"data_offsets":[0,0]}}"#, dataBytes: 0)
        #expect(throws: CheckpointError.self) { _ = try SafeTensorsFile(data: d) }
    }

    @Test func nonIntegerShapesAndOffsetsAreCorrupt() throws {
        for header in [#"{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#,
                       #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}"#,
                       #"{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#,
                       #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#,
                       #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,1e300]}}"#] {
            #expect(throws: CheckpointError.self, "\(header)") { _ = try SafeTensorsFile(data: Self.file(header: header, dataBytes: 8)) }
        }
    }

    @Test func aCounterThatIsNotAnIntegerIsRefusedAndNothingChanges() throws {
        let bn = BatchNorm2d("bn", 2)
        final class One: Module {
            let bn: BatchNorm2d
            init(_ bn: BatchNorm2d) { self.bn = bn }
            var parameters: [Parameter] { bn.parameters }
            var stateEntries: [StateEntry] { bn.stateEntries }
        }
        let m = One(bn)
        for bad: Float in [.nan, .infinity, 1e30] {
            var w = SafeTensorsWriter()
            for e in m.stateEntries {
                if case .float(let t) = e.value {
                    let filled = Tensor(shape: t.shape)
                    for i in 0..<filled.count { filled.data[i] = 5 }
                    w.add(e.name, filled)
                }
            }
            let counter = Tensor(shape: [])
            counter.data[0] = bad
            w.add("bn.num_batches_tracked", counter)  // F32, not I64: a damaged or foreign file
            let f = try SafeTensorsFile(data: try w.serialized())
            #expect(throws: CheckpointError.self, "\(bad)") { _ = try f.int64Values("bn.num_batches_tracked") }
            let before = bn.weight.value.array
            #expect(throws: CheckpointError.self, "\(bad)") { try m.load(from: f) }
            let unchanged = bn.weight.value.array == before
            #expect(unchanged, "a failed load changes nothing")
        }
    }
}
