/// Breadth-first 8-connected flood fill on a `width`×`height` label grid (row-major): relabels
/// `start` and every pixel reachable from it through pixels labelled `from` to `to`. On return
/// `visited` holds the relabelled pixels' indices in visiting order (its old contents are dropped;
/// its capacity is reused).
/// - Precondition: `grid[start] == from` and `from != to`.
func floodFill8(_ grid: inout [UInt8], width: Int, height: Int, start: Int, from: UInt8, to: UInt8, visited: inout [Int]) {
    visited.removeAll(keepingCapacity: true)
    grid[start] = to
    visited.append(start)
    var head = 0
    while head < visited.count {
        let i = visited[head]
        head += 1
        let x = i % width, y = i / width
        for ny in max(0, y - 1)...min(height - 1, y + 1) {
            for nx in max(0, x - 1)...min(width - 1, x + 1) where grid[ny * width + nx] == from {
                grid[ny * width + nx] = to
                visited.append(ny * width + nx)
            }
        }
    }
}
