//! int8 dense layers for the CPU pass: `f32` activations × `i8` weights -> `f32`.
//!
//! - Weights are quantized once at load, symmetric per output column (`w ≈ q · scale`,
//!   `q` in -127..=127), and packed for the kernels: 64 columns at a time, then 4 inputs
//!   at a time, 16 columns × 4 bytes (one 512-bit vector). `k` and `n` are padded with
//!   zeros to multiples of 4 and 64.
//! - Each call quantizes every activation row with its own scale (`x ≈ q · s_row`, `q` in
//!   -127..=127, stored as `q + 128` in a `u8`), takes the exact `i32` dot products, and
//!   writes `residual + bias + dot · s_row · scale`.
//! - The kernel is picked at run time: AMX (`tdpbusd` on 32 rows × 32 columns, batches),
//!   AVX-512 VNNI (`vpdpbusd`, 6 rows × 64 columns, or a query's up to 12 rows × 32
//!   columns in one pass over the weights), AVX-VNNI (the same on 256 bits), AVX2, else a
//!   scalar loop. The AMX and VNNI kernels multiply `q + 128` (unsigned) by the weights
//!   and subtract `128 · Σ w`, which the layer keeps per column. AVX2's `vpmaddubsw` adds two u8×i8 products into a SATURATING i16, too
//!   small for 255 × 127 × 2; it multiplies `|q|` by the weight carrying `q`'s sign
//!   instead (at most 2 × 127 × 127 = 32,258), so every kernel gives the exact same sums,
//!   with full 8-bit weights (no reduced range).

/// Columns per packed block.
const NB: usize = 64;

/// The integer kernel a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, any CPU.
    Scalar,
    /// AVX2 `vpmaddubsw` on sign-folded bytes.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-VNNI `vpdpbusd` on 256 bits.
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// AVX-512 VNNI `vpdpbusd` on 512 bits.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AMX `tdpbusd` on 16 × 64-byte tiles for 32 rows at a time (batches), AVX-512 VNNI
    /// for the rest (queries, the last rows).
    #[cfg(target_arch = "x86_64")]
    Amx,
}

impl Kernel {
    /// Every kernel this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                if x86::amx_usable() {
                    all.push(Kernel::Amx);
                }
                all.push(Kernel::Avx512Vnni);
            }
            if has!("avx2") && has!("avxvnni") {
                all.push(Kernel::AvxVnni);
            }
            if has!("avx2") {
                all.push(Kernel::Avx2);
            }
        }
        all.push(Kernel::Scalar);
        all
    }

    /// The fastest kernel this CPU runs (`SHOPRANK_INT8_KERNEL` = `scalar`, `avx2`,
    /// `avxvnni`, `avx512vnni` or `amx` picks another available one, for measurements).
    pub fn best() -> Kernel {
        let all = Kernel::available();
        if let Ok(name) = std::env::var("SHOPRANK_INT8_KERNEL") {
            if let Some(k) = all.iter().find(|k| k.name() == name) {
                return *k;
            }
            tracing::warn!(kernel = %name, "int8 kernel not available here; using the best one");
        }
        all[0]
    }

    /// Lowercase name, as in `SHOPRANK_INT8_KERNEL`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => "avxvnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => "avx512vnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => "amx",
        }
    }
}

/// A dense layer with int8 weights: `out = residual + bias + x · W`.
pub(super) struct Dense {
    /// The packed weights (see the module docs).
    packed: Vec<i8>,
    /// Per output column (padded columns: 0).
    scale: Vec<f32>,
    /// `Σ_k q` per padded column, for the unsigned-activation kernels.
    colsum: Vec<i32>,
    bias: Vec<f32>,
    input: usize,
    /// Output columns.
    pub(super) output: usize,
    /// `input` rounded up to a multiple of 4.
    kp: usize,
    /// `output` rounded up to a multiple of 64.
    np: usize,
    kernel: Kernel,
}

/// Per-thread work buffers of [`Dense::apply`].
#[derive(Default)]
struct Buffers {
    codes: Vec<u8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
}

impl Dense {
    /// Quantizes a row-major `input × output` weight.
    pub(super) fn new(weight: &[f32], bias: &[f32], input: usize, output: usize) -> Dense {
        Dense::with_kernel(weight, bias, input, output, Kernel::best())
    }

    pub(super) fn with_kernel(
        weight: &[f32],
        bias: &[f32],
        input: usize,
        output: usize,
        kernel: Kernel,
    ) -> Dense {
        assert_eq!(weight.len(), input * output);
        assert_eq!(bias.len(), output);
        let kp = input.div_ceil(4) * 4;
        let np = output.div_ceil(NB) * NB;
        let mut scale = vec![0f32; np];
        let mut colsum = vec![0i32; np];
        let mut packed = vec![0i8; kp * np];
        for n in 0..output {
            let max = (0..input)
                .map(|k| weight[k * output + n].abs())
                .fold(0f32, f32::max);
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale[n] = s;
            for k in 0..input {
                let q = (weight[k * output + n] / s)
                    .round_ties_even()
                    .clamp(-127.0, 127.0) as i8;
                packed[offset(kp, n, k)] = q;
                colsum[n] += i32::from(q);
            }
        }
        Dense {
            packed,
            scale,
            colsum,
            bias: bias.to_vec(),
            input,
            output,
            kp,
            np,
            kernel,
        }
    }

    /// `out` (`rows × output`) = `residual` (when given) + bias + `x · W`, for `x`
    /// holding `rows × input` values.
    #[inline(always)]
    pub(super) fn apply(&self, x: &[f32], rows: usize, residual: Option<&[f32]>, out: &mut [f32]) {
        thread_local! {
            static BUFFERS: std::cell::RefCell<Buffers> = Default::default();
        }
        let (k, n) = (self.input, self.output);
        debug_assert!(x.len() >= rows * k && out.len() >= rows * n);
        if rows == 0 {
            return;
        }
        BUFFERS.with_borrow_mut(|b| {
            grow(&mut b.codes, rows * self.kp);
            grow(&mut b.scales, rows);
            grow(&mut b.sums, rows * self.np);
            // A closure does not inherit its caller's target features: without this the
            // rounding below was a libm call per value (a fifth of the int8 batch time).
            #[cfg(target_arch = "x86_64")]
            if matches!(self.kernel, Kernel::Avx512Vnni | Kernel::Amx) {
                // SAFETY: these kernels need (and checked) AVX-512 F and BW.
                return unsafe { self.apply_avx512(x, rows, residual, out, b) };
            }
            #[cfg(target_arch = "x86_64")]
            if self.kernel != Kernel::Scalar {
                // SAFETY: every x86 kernel but the scalar one needs (and checked) AVX2.
                return unsafe { self.apply_avx2(x, rows, residual, out, b) };
            }
            self.apply_with(x, rows, residual, out, b)
        })
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    unsafe fn apply_avx512(
        &self,
        x: &[f32],
        rows: usize,
        residual: Option<&[f32]>,
        out: &mut [f32],
        b: &mut Buffers,
    ) {
        self.apply_with(x, rows, residual, out, b)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(
        &self,
        x: &[f32],
        rows: usize,
        residual: Option<&[f32]>,
        out: &mut [f32],
        b: &mut Buffers,
    ) {
        self.apply_with(x, rows, residual, out, b)
    }

    /// [`Dense::apply`] with room for `rows` rows in `b`.
    #[inline(always)]
    fn apply_with(
        &self,
        x: &[f32],
        rows: usize,
        residual: Option<&[f32]>,
        out: &mut [f32],
        b: &mut Buffers,
    ) {
        let (k, n) = (self.input, self.output);
        for ((row, codes), s) in x[..rows * k]
            .chunks_exact(k)
            .zip(b.codes.chunks_exact_mut(self.kp))
            .zip(b.scales.iter_mut())
        {
            *s = quantize_row(row, codes);
        }
        self.sums(
            &b.codes[..rows * self.kp],
            rows,
            &mut b.sums[..rows * self.np],
        );
        for (r, row) in out[..rows * n].chunks_exact_mut(n).enumerate() {
            let sums = &b.sums[r * self.np..][..n];
            let s = b.scales[r];
            match residual {
                Some(res) => {
                    for ((((o, d), c), bias), x) in row
                        .iter_mut()
                        .zip(sums)
                        .zip(&self.scale)
                        .zip(&self.bias)
                        .zip(&res[r * n..][..n])
                    {
                        *o = *d as f32 * (s * c) + bias + x;
                    }
                }
                None => {
                    for (((o, d), c), bias) in
                        row.iter_mut().zip(sums).zip(&self.scale).zip(&self.bias)
                    {
                        *o = *d as f32 * (s * c) + bias;
                    }
                }
            }
        }
    }

    /// The exact `i32` dot products of the quantized rows (`codes`: `rows × kp`, each
    /// value `q + 128`) with every padded column: `sums` is `rows × np`.
    fn sums(&self, codes: &[u8], rows: usize, sums: &mut [i32]) {
        assert!(codes.len() >= rows * self.kp && sums.len() >= rows * self.np);
        let (a, kp, w, np) = (codes.as_ptr(), self.kp, self.packed.as_ptr(), self.np);
        let cs = self.colsum.as_ptr();
        let out = sums.as_mut_ptr();
        // SAFETY: `codes` holds `rows × kp` bytes and `sums` `rows × np` values (asserted
        // just above); `packed` holds `kp × np` bytes and `colsum` `np` values by
        // construction; the kernel was chosen from the features this CPU reports.
        match self.kernel {
            Kernel::Scalar => sums_scalar(codes, rows, kp, &self.packed, np, sums),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::avx2(a, rows, kp, w, np, out) },
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => unsafe { x86::avxvnni(a, rows, kp, w, np, cs, out) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { x86::avx512vnni(a, rows, kp, w, np, cs, out) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => unsafe { x86::amx(a, rows, kp, w, np, cs, out) },
        }
        let _ = (a, w, cs, out);
    }
}

/// Where weight `(k, n)` sits in the packed layout of a `kp`-row weight.
fn offset(kp: usize, n: usize, k: usize) -> usize {
    let (block, col) = (n / NB, n % NB);
    block * kp * NB + (k / 4) * NB * 4 + (col / 16) * 64 + (col % 16) * 4 + k % 4
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        *v = Vec::new();
        *v = vec![T::default(); len];
    }
}

/// Writes `round(x / s) + 128` for `s = max|x| / 127` (padding: 128, a zero) and
/// returns `s`.
#[inline(always)]
fn quantize_row(row: &[f32], codes: &mut [u8]) -> f32 {
    // Sixteen running maxima, so the loop vectorizes.
    let mut lanes = [0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(0f32, |m, v| m.max(v.abs()));
    for c in chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = m.max(v.abs());
        }
    }
    let max = lanes.iter().fold(tail, |m, v| m.max(*v));
    let (s, inv) = if max > 0.0 {
        (max / 127.0, 127.0 / max)
    } else {
        (1.0, 0.0)
    };
    for (c, v) in codes.iter_mut().zip(row) {
        // `max`/`min` give the other operand for a NaN, so `q` is finite and in range
        // (a saturating `as i32` checks NaN value by value and did not vectorize).
        #[allow(clippy::manual_clamp)] // `clamp` keeps NaN, which `to_int_unchecked` must not see
        let q = (v * inv).round_ties_even().max(-127.0).min(127.0);
        // SAFETY: `q` is finite and within -127..=127 (just above).
        *c = (unsafe { q.to_int_unchecked::<i32>() } + 128) as u8;
    }
    codes[row.len()..].fill(128);
    s
}

/// The reference kernel.
fn sums_scalar(codes: &[u8], rows: usize, kp: usize, packed: &[i8], np: usize, sums: &mut [i32]) {
    for r in 0..rows {
        let a = &codes[r * kp..][..kp];
        for n in 0..np {
            let mut acc = 0i32;
            for (k, &q) in a.iter().enumerate() {
                acc += (i32::from(q) - 128) * i32::from(packed[offset(kp, n, k)]);
            }
            sums[r * np + n] = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86 kernels. All take `a`: `rows × kp` codes (`q + 128`), `w`: the packed
    //! weights, and write `out`: `rows × np` exact dot products. A tile is up to `R` rows
    //! × 16 (AVX2 class) or 64 (AVX-512) columns, its sums held in registers over all of `k`;
    //! a block's weights stay in cache while every row tile passes over them.

    use std::arch::x86_64::*;

    use super::NB;

    /// Rows per tile, 512-bit: 6 × 4 accumulators + 4 weights + 1 broadcast of 32 registers.
    const R512: usize = 6;
    /// Up to this many rows, 512-bit: one tile of 12 × 2 accumulators.
    const FEW: usize = 12;
    /// Rows per tile, 256-bit: 6 × 2 accumulators + 2 weights + 1 broadcast of 16.
    const R256: usize = 6;
    /// Rows per tile, AVX2: 4 × 2 accumulators and 6 temporaries of 16.
    const RAVX2: usize = 4;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn avx512vnni(
        a: *const u8,
        rows: usize,
        kp: usize,
        w: *const i8,
        np: usize,
        colsum: *const i32,
        out: *mut i32,
    ) {
        if rows <= FEW {
            // A query: every row in one tile, 32 columns at a time, so the weights
            // (read from L3 at this size) pass once.
            for half in 0..np / 32 {
                let wb = w.add((half / 2) * kp * NB + (half % 2) * 128);
                let (cs, o) = (colsum.add(half * 32), out.add(half * 32));
                macro_rules! few {
                    ($($r:literal)*) => {
                        match rows {
                            $($r => tile512::<$r, 2>(a, kp, wb, cs, o, np),)*
                            _ => unreachable!(),
                        }
                    };
                }
                few!(1 2 3 4 5 6 7 8 9 10 11 12);
            }
            return;
        }
        for block in 0..np / NB {
            let wb = w.add(block * kp * NB);
            let cs = colsum.add(block * NB);
            let o = out.add(block * NB);
            let mut r = 0;
            while r < rows {
                let n = (rows - r).min(R512);
                let (ar, or) = (a.add(r * kp), o.add(r * np));
                match n {
                    6 => tile512::<6, 4>(ar, kp, wb, cs, or, np),
                    5 => tile512::<5, 4>(ar, kp, wb, cs, or, np),
                    4 => tile512::<4, 4>(ar, kp, wb, cs, or, np),
                    3 => tile512::<3, 4>(ar, kp, wb, cs, or, np),
                    2 => tile512::<2, 4>(ar, kp, wb, cs, or, np),
                    _ => tile512::<1, 4>(ar, kp, wb, cs, or, np),
                }
                r += n;
            }
        }
    }

    /// `R` rows × `C` × 16 columns; `w` steps 256 bytes per 4 inputs.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn tile512<const R: usize, const C: usize>(
        a: *const u8,
        kp: usize,
        w: *const i8,
        colsum: *const i32,
        out: *mut i32,
        np: usize,
    ) {
        let mut acc = [[_mm512_setzero_si512(); C]; R];
        for k4 in 0..kp / 4 {
            let wp = w.add(k4 * NB * 4);
            let mut ws = [_mm512_setzero_si512(); C];
            for (c, v) in ws.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(wp.add(c * 64).cast());
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(a.add(i * kp + k4 * 4).cast::<i32>().read_unaligned());
                for (acc, w) in acc.iter_mut().zip(&ws) {
                    *acc = _mm512_dpbusd_epi32(*acc, x, *w);
                }
            }
        }
        for c in 0..C {
            let shift = _mm512_slli_epi32::<7>(_mm512_loadu_si512(colsum.add(c * 16).cast()));
            for (i, acc) in acc.iter().enumerate() {
                let v = _mm512_sub_epi32(acc[c], shift);
                _mm512_storeu_si512(out.add(i * np + c * 16).cast(), v);
            }
        }
    }

    /// Whether this CPU has AMX with int8 and Linux let this process use the tile data
    /// (asked once, for the whole process).
    pub(super) fn amx_usable() -> bool {
        static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *USABLE.get_or_init(|| {
            // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
            let leaf = __cpuid_count(7, 0);
            if leaf.edx & (1 << 24) == 0 || leaf.edx & (1 << 25) == 0 {
                return false;
            }
            request_tile_data()
        })
    }

    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux hands out the 8 KiB
    /// tile state only to processes that ask.
    #[cfg(target_os = "linux")]
    fn request_tile_data() -> bool {
        let ret: i64;
        // SAFETY: the arch_prctl system call (158) with a permission request reads and
        // writes no memory of ours; `syscall` clobbers rcx and r11.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") 158i64 => ret,
                in("rdi") 0x1023i64,
                in("rsi") 18i64,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        ret == 0
    }

    #[cfg(not(target_os = "linux"))]
    fn request_tile_data() -> bool {
        false
    }

    /// Tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    const TILES: TileConfig = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
            c[48 + t] = 16; // rows
            t += 1;
        }
        TileConfig(c)
    };

    /// 32 rows × 32 columns per step: tiles 4 and 5 hold 16 rows × 64 inputs of codes
    /// each, 6 and 7 the weights of 16 columns × 64 inputs each (the packed layout's
    /// 64-byte rows, 256 bytes apart, are AMX's "VNNI" B layout), 0 to 3 the sums.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn amx(
        a: *const u8,
        rows: usize,
        kp: usize,
        w: *const i8,
        np: usize,
        colsum: *const i32,
        out: *mut i32,
    ) {
        let full = if kp.is_multiple_of(64) {
            rows / 32 * 32
        } else {
            0
        };
        if full > 0 {
            std::arch::asm!("ldtilecfg [{}]", in(reg) TILES.0.as_ptr(), options(nostack, readonly));
            for pair in 0..np / 32 {
                let wb = w.add((pair / 2) * kp * NB + (pair % 2) * 128);
                let cs = colsum.add(pair * 32);
                let shift = [
                    _mm512_slli_epi32::<7>(_mm512_loadu_si512(cs.cast())),
                    _mm512_slli_epi32::<7>(_mm512_loadu_si512(cs.add(16).cast())),
                ];
                for r in (0..full).step_by(32) {
                    std::arch::asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack, nomem)
                    );
                    for step in 0..kp / 64 {
                        let ap = a.add(r * kp + step * 64);
                        let bp = wb.add(step * 16 * NB * 4);
                        std::arch::asm!(
                            "tileloadd tmm4, [{a0} + {sa}*1]",
                            "tileloadd tmm5, [{a1} + {sa}*1]",
                            "tileloadd tmm6, [{b0} + {sb}*1]",
                            "tileloadd tmm7, [{b1} + {sb}*1]",
                            "tdpbusd tmm0, tmm4, tmm6",
                            "tdpbusd tmm1, tmm4, tmm7",
                            "tdpbusd tmm2, tmm5, tmm6",
                            "tdpbusd tmm3, tmm5, tmm7",
                            a0 = in(reg) ap,
                            a1 = in(reg) ap.add(16 * kp),
                            sa = in(reg) kp,
                            b0 = in(reg) bp,
                            b1 = in(reg) bp.add(64),
                            sb = in(reg) NB * 4,
                            options(nostack, readonly)
                        );
                    }
                    let o = out.add(r * np + pair * 32);
                    std::arch::asm!(
                        "tilestored [{o0} + {so}*1], tmm0",
                        "tilestored [{o1} + {so}*1], tmm1",
                        "tilestored [{o2} + {so}*1], tmm2",
                        "tilestored [{o3} + {so}*1], tmm3",
                        o0 = in(reg) o,
                        o1 = in(reg) o.add(16),
                        o2 = in(reg) o.add(16 * np),
                        o3 = in(reg) o.add(16 * np + 16),
                        so = in(reg) np * 4,
                        options(nostack)
                    );
                    // The codes are q + 128: take 128 · Σ w off.
                    for i in 0..32 {
                        for (c, shift) in shift.iter().enumerate() {
                            let p = o.add(i * np + c * 16);
                            let v = _mm512_sub_epi32(_mm512_loadu_si512(p.cast()), *shift);
                            _mm512_storeu_si512(p.cast(), v);
                        }
                    }
                }
            }
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
        if full < rows {
            avx512vnni(
                a.add(full * kp),
                rows - full,
                kp,
                w,
                np,
                colsum,
                out.add(full * np),
            );
        }
    }

    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn avxvnni(
        a: *const u8,
        rows: usize,
        kp: usize,
        w: *const i8,
        np: usize,
        colsum: *const i32,
        out: *mut i32,
    ) {
        for group in 0..np / 16 {
            // 16 columns: 64 bytes of every 256-byte step of their block.
            let wb = w.add((group / 4) * kp * NB + (group % 4) * 64);
            let cs = colsum.add(group * 16);
            let o = out.add(group * 16);
            let mut r = 0;
            while r < rows {
                let n = (rows - r).min(R256);
                let (ar, or) = (a.add(r * kp), o.add(r * np));
                match n {
                    6 => tile_vnni::<6>(ar, kp, wb, cs, or, np),
                    5 => tile_vnni::<5>(ar, kp, wb, cs, or, np),
                    4 => tile_vnni::<4>(ar, kp, wb, cs, or, np),
                    3 => tile_vnni::<3>(ar, kp, wb, cs, or, np),
                    2 => tile_vnni::<2>(ar, kp, wb, cs, or, np),
                    _ => tile_vnni::<1>(ar, kp, wb, cs, or, np),
                }
                r += n;
            }
        }
    }

    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    unsafe fn tile_vnni<const R: usize>(
        a: *const u8,
        kp: usize,
        w: *const i8,
        colsum: *const i32,
        out: *mut i32,
        np: usize,
    ) {
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for k4 in 0..kp / 4 {
            let wp = w.add(k4 * NB * 4);
            let ws = [
                _mm256_loadu_si256(wp.cast()),
                _mm256_loadu_si256(wp.add(32).cast()),
            ];
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_epi32(a.add(i * kp + k4 * 4).cast::<i32>().read_unaligned());
                for c in 0..2 {
                    acc[c] = _mm256_dpbusd_avx_epi32(acc[c], x, ws[c]);
                }
            }
        }
        for c in 0..2 {
            let shift = _mm256_slli_epi32::<7>(_mm256_loadu_si256(colsum.add(c * 8).cast()));
            for (i, acc) in acc.iter().enumerate() {
                let v = _mm256_sub_epi32(acc[c], shift);
                _mm256_storeu_si256(out.add(i * np + c * 8).cast(), v);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2(
        a: *const u8,
        rows: usize,
        kp: usize,
        w: *const i8,
        np: usize,
        out: *mut i32,
    ) {
        for group in 0..np / 16 {
            let wb = w.add((group / 4) * kp * NB + (group % 4) * 64);
            let o = out.add(group * 16);
            let mut r = 0;
            while r < rows {
                let n = (rows - r).min(RAVX2);
                let (ar, or) = (a.add(r * kp), o.add(r * np));
                match n {
                    4 => tile_avx2::<4>(ar, kp, wb, or, np),
                    3 => tile_avx2::<3>(ar, kp, wb, or, np),
                    2 => tile_avx2::<2>(ar, kp, wb, or, np),
                    _ => tile_avx2::<1>(ar, kp, wb, or, np),
                }
                r += n;
            }
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn tile_avx2<const R: usize>(
        a: *const u8,
        kp: usize,
        w: *const i8,
        out: *mut i32,
        np: usize,
    ) {
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(-128);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for k4 in 0..kp / 4 {
            let wp = w.add(k4 * NB * 4);
            let ws = [
                _mm256_loadu_si256(wp.cast()),
                _mm256_loadu_si256(wp.add(32).cast()),
            ];
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_epi32(a.add(i * kp + k4 * 4).cast::<i32>().read_unaligned());
                // q + 128 -> q (signed), then |q| and the weights with q's sign.
                let q = _mm256_xor_si256(x, flip);
                let abs = _mm256_sign_epi8(q, q);
                for c in 0..2 {
                    let signed = _mm256_sign_epi8(ws[c], q);
                    let pairs = _mm256_maddubs_epi16(abs, signed);
                    acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (c, v) in acc.iter().enumerate() {
                _mm256_storeu_si256(out.add(i * np + c * 8).cast(), *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the tests need no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in -1..1.
        fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    #[test]
    fn every_kernel_gives_the_scalar_sums() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let kernels = Kernel::available();
        println!("kernels here: {kernels:?}");
        for (rows, input, output) in [
            (1, 4, 64),
            (1, 512, 512),
            (7, 37, 70),
            (10, 512, 1536),
            (13, 2048, 512),
            (6, 3, 1),
            (25, 130, 200),
            (32, 64, 64),
            (77, 512, 192),
            (70, 2048, 512),
        ] {
            let weight: Vec<f32> = (0..input * output).map(|_| rng.f32()).collect();
            let bias = vec![0.0; output];
            // Extremes included: full-scale codes on both sides.
            let mut codes: Vec<u8> = (0..rows * input)
                .map(|_| (rng.next() % 255) as u8 + 1)
                .collect();
            codes[0] = 1;
            let reference = Dense::with_kernel(&weight, &bias, input, output, Kernel::Scalar);
            let kp = reference.kp;
            let mut padded = vec![128u8; rows * kp];
            for r in 0..rows {
                padded[r * kp..][..input].copy_from_slice(&codes[r * input..][..input]);
            }
            let mut want = vec![0i32; rows * reference.np];
            reference.sums(&padded, rows, &mut want);
            for &kernel in &kernels {
                let dense = Dense::with_kernel(&weight, &bias, input, output, kernel);
                let mut got = vec![7i32; rows * dense.np];
                dense.sums(&padded, rows, &mut got);
                assert_eq!(got, want, "{kernel:?}, {rows}×{input}×{output}");
            }
        }
    }

    #[test]
    fn saturating_inputs_stay_exact() {
        // All codes at -127 and all weights at ±127: the largest pair sums there are.
        let (rows, input, output) = (3, 64, 64);
        let weight: Vec<f32> = (0..input * output)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let codes = vec![1u8; rows * input];
        let reference =
            Dense::with_kernel(&weight, &vec![0.0; output], input, output, Kernel::Scalar);
        let mut want = vec![0i32; rows * reference.np];
        reference.sums(&codes, rows, &mut want);
        for kernel in Kernel::available() {
            let dense = Dense::with_kernel(&weight, &vec![0.0; output], input, output, kernel);
            let mut got = vec![0i32; rows * dense.np];
            dense.sums(&codes, rows, &mut got);
            assert_eq!(got, want, "{kernel:?}");
        }
    }

    #[test]
    fn int8_dense_is_close_to_f32() {
        let mut rng = Rng(42);
        for (rows, input, output) in [(1, 512, 512), (9, 37, 70), (31, 2048, 512)] {
            let weight: Vec<f32> = (0..input * output).map(|_| rng.f32() * 0.05).collect();
            let bias: Vec<f32> = (0..output).map(|_| rng.f32()).collect();
            let x: Vec<f32> = (0..rows * input).map(|_| rng.f32() * 3.0).collect();
            let residual: Vec<f32> = (0..rows * output).map(|_| rng.f32()).collect();
            let mut want = residual.clone();
            for r in 0..rows {
                for n in 0..output {
                    let mut acc = 0f64;
                    for k in 0..input {
                        acc += f64::from(x[r * input + k]) * f64::from(weight[k * output + n]);
                    }
                    want[r * output + n] += acc as f32 + bias[n];
                }
            }
            for kernel in Kernel::available() {
                let dense = Dense::with_kernel(&weight, &bias, input, output, kernel);
                let mut got = vec![0f32; rows * output];
                dense.apply(&x, rows, Some(&residual), &mut got);
                // Against the product's own spread (its rms, 0.05/√3 · 3/√3 · √k): rms
                // error under 1%, no value off by 5% (quantization noise is ~0.5% rms).
                let spread = (input as f32).sqrt() * 0.05;
                let (mut max, mut sq) = (0f32, 0f64);
                for (a, b) in got.iter().zip(&want) {
                    max = max.max((a - b).abs());
                    sq += f64::from(a - b).powi(2);
                }
                let rms = (sq / got.len() as f64).sqrt() as f32;
                let at = format!("{kernel:?} {rows}×{input}×{output}");
                assert!(rms < 0.01 * spread, "{at}: rms {rms} vs {spread}");
                assert!(max < 0.05 * spread, "{at}: max {max} vs {spread}");
            }
        }
    }
}
