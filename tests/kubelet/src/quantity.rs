//! Just enough of Kubernetes resource quantities ("500m", "1Gi", "2e3") for `resourceFieldRef`
//! and node capacity. Values are handled as `f64`: the downward API only needs them rounded up
//! to a divisor, so exact decimal arithmetic is not worth its weight in a test tool.

/// Parses a quantity string into its value in base units (cores, bytes, ...).
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// `ceil(value / divisor)` as the downward API reports it: CPU and memory are always rounded up
/// so that a container asking for "how many cores" never gets 0 when it has some.
pub fn divide_ceil(value: f64, divisor: f64) -> Option<i64> {
    if divisor <= 0.0 {
        return None;
    }
    // Small epsilon so that 0.5/0.001 stays 500 despite binary floating point.
    let ratio = value / divisor;
    let rounded = if (ratio - ratio.round()).abs() < 1e-9 {
        ratio.round()
    } else {
        ratio.ceil()
    };
    Some(rounded as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1Gi"), Some(1073741824.0));
        assert_eq!(parse("128M"), Some(128e6));
        assert_eq!(parse("2e3"), Some(2000.0));
        assert_eq!(parse("1.5Ki"), Some(1536.0));
        assert_eq!(parse("abc"), None);
        assert_eq!(parse("1Xi"), None);
    }

    #[test]
    fn divides_rounding_up() {
        assert_eq!(divide_ceil(0.5, 1.0), Some(1));
        assert_eq!(divide_ceil(0.5, 0.001), Some(500));
        assert_eq!(divide_ceil(1073741824.0, 1048576.0), Some(1024));
        assert_eq!(divide_ceil(1.0, 0.0), None);
    }
}
