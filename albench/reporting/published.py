"""The paper's published values (Dai et al., "Suggestive annotation of brain MR images with
gradient-guided sampling", Medical Image Analysis 2022, Tables 3-5): mean ± sd over 10
repetitions, 2-D U-Net. Shown beside our numbers only on the real datasets they were measured on."""

from __future__ import annotations

from typing import Any

SOURCE = ("Dai et al., Medical Image Analysis 2022, Tables 3-5 (mean ± sd over 10 repetitions, 2-D U-Net); "
          "the paper does not say whether its HD is HD or HD95, nor exactly what its Wilcoxon test pairs")

_BRATS_DICE = {  # Table 3, regions WT / ET / TC, budgets 3 % and 7 %
    "Random": ("0.8124±0.0172", "0.6857±0.0237", "0.7509±0.0189", "0.8402±0.0197", "0.7035±0.0201", "0.7701±0.0177"),
    "DAL": ("0.8156±0.0146", "0.6892±0.0193", "0.7535±0.0211", "0.8457±0.0133", "0.7093±0.0181", "0.7795±0.0134"),
    "ClsMC": ("0.8113±0.011", "0.6823±0.0122", "0.7587±0.0131", "0.8369±0.0154", "0.7018±0.0186", "0.7801±0.0164"),
    "LL": ("0.8207±0.0125", "0.6874±0.0171", "0.7562±0.014", "0.8491±0.0106", "0.7103±0.0193", "0.7746±0.0129"),
    "Proposed (GGS)": ("0.8238±0.0101", "0.6972±0.0103", "0.7619±0.0137", "0.8589±0.0093", "0.7291±0.0127", "0.7947±0.0105"),
    "Oracle": ("0.8297±0.0141", "0.7062±0.0149", "0.7649±0.017", "0.8614±0.0101", "0.7396±0.0116", "0.7998±0.0112"),
    "Full dataset": ("–", "–", "–", "0.8663±0.0081", "0.7457±0.0104", "0.8026±0.0093"),
    "Wilcoxon p (top two)": ("≈0.27", "≈0.05", "≈0.04", "<0.01", "<0.01", "<0.01"),
}
_BRATS_HD = {  # Table 4, mm
    "Random": ("12.35±1.49", "16.05±2.37", "20.73±2.89", "10.29±1.26", "14.75±1.79", "19.54±1.87"),
    "DAL": ("12.01±1.23", "16.56±2.1", "20.03±2.95", "10.27±1.04", "15.39±1.8", "19.23±2.13"),
    "ClsMC": ("11.97±1.27", "16.43±2.05", "19.81±2.4", "10.58±1.12", "15.24±1.92", "19.06±1.95"),
    "LL": ("12.21±1.2", "16.37±2.17", "19.97±2.67", "10.96±0.97", "15.43±1.67", "19.12±2.09"),
    "Proposed (GGS)": ("11.42±1.15", "16.13±2.03", "19.89±2.53", "9.03±1.18", "15.04±1.71", "18.51±1.93"),
    "Oracle": ("11.03±1.09", "15.82±1.9", "19.42±2.16", "9.43±0.95", "14.89±1.32", "18.11±1.77"),
    "Full dataset": ("–", "–", "–", "8.99±0.87", "14.58±1.19", "17.54±1.41"),
    "Wilcoxon p (top two)": ("≈0.01", "≈0.47", "≈0.59", "≈0.02", "≈0.53", "≈0.02"),
}
_MALC = {  # Table 5: 24 % Dice, 24 % HD, 42 % Dice, 42 % HD
    "Random": ("0.7427±0.0425", "14.21±2.75", "0.7679±0.0231", "12.15±2.11"),
    "DAL": ("0.7478±0.0262", "12.9±2.24", "0.7701±0.0103", "10.85±1.65"),
    "ClsMC": ("0.7503±0.0192", "11.83±2.15", "0.7713±0.0127", "10.07±1.59"),
    "LL": ("0.7485±0.0233", "13.41±1.99", "0.7692±0.0148", "11.3±1.8"),
    "Proposed (GGS)": ("0.7519±0.014", "12.56±2.77", "0.7782±0.0098", "10.21±1.92"),
    "Oracle": ("0.7742±0.0076", "11.69±2.08", "0.7802±0.0064", "10.39±1.78"),
    "Full dataset": ("–", "–", "0.7841±0.0071", "9.8±1.46"),
    "Wilcoxon p (top two)": ("≈0.38", "≈0.05", "<0.01", "≈0.4"),
}
_BRATS_HEAD = ["method", "3% WT", "3% ET", "3% TC", "7% WT", "7% ET", "7% TC"]
REAL = {"brats19": "BraTS 2019", "malc": "MALC 2012"}


def _table(title: str, head: list[str], rows: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    return {"title": title, "header": head, "rows": [[k, *v] for k, v in rows.items()]}


def for_dataset(dataset: str) -> dict[str, Any]:
    """The published tables for ``dataset`` (``comparable`` True only on brats19 and malc), or a
    note that they are not comparable."""
    if dataset == "brats19":
        return {"comparable": True, "source": SOURCE, "tables": [
            _table("Table 3: Dice (BraTS 2019)", _BRATS_HEAD, _BRATS_DICE),
            _table("Table 4: Hausdorff distance, mm (BraTS 2019)", _BRATS_HEAD, _BRATS_HD)]}
    if dataset == "malc":
        return {"comparable": True, "source": SOURCE, "tables": [
            _table("Table 5: MALC, mean over 25 structures", ["method", "24% Dice", "24% HD mm", "42% Dice", "42% HD mm"],
                   _MALC)]}
    return {"comparable": False, "source": SOURCE, "tables": [],
            "note": f"dataset {dataset} is not the paper's data (BraTS 2019 or MALC 2012): the paper's published "
                    "values (Tables 3-5) are not comparable and are not shown"}
